package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/api"
	"banger/internal/model"
)

// maxUserKeyBytes bounds one public key line (an RSA 16384-bit key is
// about 2.8 KiB); maxUserKeys the keys one VM collects.
const (
	maxUserKeyBytes = 8 << 10
	maxUserKeys     = 16
)

// normalizeUserKey checks that line is one OpenSSH public key and returns
// it as "type base64 comment" with any options dropped: a caller gets a
// key authorized, never a command= or from= of its choosing.
func normalizeUserKey(line string) (string, error) {
	if len(line) > maxUserKeyBytes || strings.ContainsAny(line, "\r\n") {
		return "", api.Errorf(api.KindInvalidArgument, "public key: want one OpenSSH public key line of at most %d bytes", maxUserKeyBytes)
	}
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return "", api.Errorf(api.KindInvalidArgument, "public key %.40q…: %v", line, err)
	}
	out := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if c := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, comment); c != "" {
		out += " " + c
	}
	return out, nil
}

// authorizeUserKey makes sure key is in the guest's authorized_keys: the
// owner's CLI reaches its VM with its own key (the daemon's never leaves
// the daemon). The key is pushed over the agent once and recorded.
func (s *VMService) authorizeUserKey(ctx context.Context, rec model.VMRecord, key string) (model.VMRecord, error) {
	key, err := normalizeUserKey(key)
	if err != nil {
		return rec, err
	}
	fields := strings.Fields(key)
	known := slices.ContainsFunc(rec.Spec.UserKeys, func(k string) bool {
		f := strings.Fields(k)
		return len(f) >= 2 && f[0] == fields[0] && f[1] == fields[1]
	})
	if known {
		return rec, nil
	}
	unlock, err := s.vmLocks.Lock(ctx, rec.ID)
	if err != nil {
		return rec, err
	}
	defer unlock()
	if rec, err = s.d.store.GetVM(ctx, rec.ID); err != nil {
		return rec, err
	}
	if len(rec.Spec.UserKeys) >= maxUserKeys {
		return rec, api.Errorf(api.KindConflict, "VM %q already has %d user keys authorized: recreate it to start over", rec.Name, maxUserKeys)
	}
	lv := s.getLive(rec.ID)
	if err := notRunningErr(rec, lv); err != nil {
		return rec, err
	}
	if err := s.pushUserKey(ctx, rec, lv, key); err != nil {
		return rec, api.Errorf(api.KindUnavailable, "authorize your key in VM %q: %w", rec.Name, err)
	}
	rec.Spec.UserKeys = append(rec.Spec.UserKeys, key)
	if err := s.d.store.UpdateVM(ctx, rec); err != nil {
		return rec, fmt.Errorf("record the key of VM %q: %w", rec.Name, err)
	}
	return rec, nil
}

// userKeyTimeout bounds pushUserKey. It holds only this VM's lock, so it
// can be longer than pushKeyTimeout (which a rotation holds keyUseMu
// across): measured under TCG on a loaded 2-core host, the first `vm exec`
// after creating a systemd guest (--init image) needed more than 20 s for
// this small script while systemd was still starting its units.
const userKeyTimeout = 90 * time.Second

// pushUserKey appends key to root's authorized_keys in the guest unless a
// line with the same key is there.
func (s *VMService) pushUserKey(ctx context.Context, rec model.VMRecord, lv *liveVM, key string) error {
	const script = `set -e; f=/root/.ssh/authorized_keys; mkdir -p /root/.ssh; chmod 700 /root/.ssh; touch "$f"; ` +
		`read -r k; set -- $k; grep -qF "$1 $2" "$f" || printf '%s\n' "$k" >> "$f"; chmod 600 "$f"`
	return s.keyScript(ctx, rec, lv, userKeyTimeout, script, key+"\n")
}
