package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"banger/internal/guestproto"
)

// Setup sends the boot's guestproto.Setup (the VM's env, its main process)
// and returns the guest's bounded, validated reply. A refusal carries the
// guest's reason (truncated: the guest is not trusted to be brief).
func (c *Client) Setup(ctx context.Context, s guestproto.Setup) (guestproto.SetupReply, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return guestproto.SetupReply{}, err
	}
	type result struct {
		ok    bool
		reply []byte
		err   error
	}
	res := make(chan result, 1)
	go func() {
		ok, reply, err := c.ssh.SendRequest(guestproto.SetupRequest, true, payload)
		res <- result{ok, reply, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return guestproto.SetupReply{}, fmt.Errorf("agent setup: %w", r.err)
		}
		if !r.ok {
			msg := string(r.reply)
			if len(msg) > 512 {
				msg = msg[:512] + "…"
			}
			msg = strings.Map(func(r rune) rune {
				if r < 0x20 && r != '\t' || r == 0x7f {
					return ' '
				}
				return r
			}, msg)
			if msg == "" {
				msg = "refused (banger-init too old?)"
			}
			return guestproto.SetupReply{}, fmt.Errorf("guest: %s", msg)
		}
		return guestproto.DecodeSetupReply(r.reply)
	case <-ctx.Done():
		return guestproto.SetupReply{}, fmt.Errorf("agent setup: %w", ctx.Err())
	}
}
