package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/api"
	"banger/internal/guestcp"
	"banger/internal/model"
)

// provisionFlags are vm create/run's --provision and --copy. The CLI reads
// the files with its user's rights and sends their contents in vm.create;
// the daemon runs them at the VM's first boot (start step "provision").
type provisionFlags struct {
	scripts []string
	copies  []string
}

func (f *provisionFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.scripts, "provision", nil, "script run once as root at the first boot, after the network is up (repeatable, in order)")
	cmd.Flags().StringArrayVar(&f.copies, "copy", nil, "HOST:GUEST file or directory copied in at the first boot, before the provisioning scripts (repeatable)")
}

// load reads the scripts and packs the copies into p.
func (f *provisionFlags) load(ctx context.Context, p *api.VMCreateParams) error {
	total := 0
	for _, s := range f.scripts {
		st, err := os.Stat(s)
		if err != nil {
			return fmt.Errorf("--provision %s: %w", s, unwrapPathErr(err))
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("--provision %s: not a regular file", s)
		}
		if st.Size() > model.MaxProvisionBytes {
			return fmt.Errorf("--provision %s: %d bytes, more than the %d all provisioning files may have", s, st.Size(), model.MaxProvisionBytes)
		}
		data, err := os.ReadFile(s)
		if err != nil {
			return fmt.Errorf("--provision %s: %w", s, unwrapPathErr(err))
		}
		total += len(data)
		p.Provision = append(p.Provision, api.ProvisionScript{Name: filepath.Base(s), Script: data})
	}
	if len(p.Provision) > model.MaxProvisionScripts {
		return fmt.Errorf("%d --provision scripts: at most %d", len(p.Provision), model.MaxProvisionScripts)
	}
	if len(f.copies) > 0 {
		var items []guestcp.TarItem
		for _, c := range f.copies {
			i := strings.LastIndex(c, ":/")
			if i <= 0 {
				return fmt.Errorf("--copy %q: want HOST:GUEST with an absolute guest path (e.g. ./app:/opt/app)", c)
			}
			host, guest := c[:i], path.Clean(c[i+1:])
			if guest == "/" {
				return fmt.Errorf("--copy %q: copy into a directory under /, not / itself", c)
			}
			items = append(items, guestcp.TarItem{Path: host, Name: strings.TrimPrefix(guest, "/")})
		}
		buf := &capBuffer{max: model.MaxProvisionBytes - total}
		if err := guestcp.WriteLocalTar(ctx, items, buf); err != nil {
			if errors.Is(err, errTooBig) {
				return fmt.Errorf("--copy: the files and scripts are more than %d bytes in all: copy large trees with `banger vm cp` once the VM runs", model.MaxProvisionBytes)
			}
			return fmt.Errorf("--copy: %w", err)
		}
		p.CopyTar = buf.Bytes()
	}
	return nil
}

var errTooBig = errors.New("too big")

// capBuffer is a bytes.Buffer that refuses to grow past max.
type capBuffer struct {
	bytes.Buffer
	max int
}

func (c *capBuffer) Write(b []byte) (int, error) {
	if c.Len()+len(b) > c.max {
		return 0, errTooBig
	}
	return c.Buffer.Write(b)
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
