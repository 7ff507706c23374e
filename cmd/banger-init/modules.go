package main

import (
	"bufio"
	"errors"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// readModuleList returns the module paths listed in path, one per line, in
// load order. A missing list means the kernel has its drivers built in.
func readModuleList(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mods []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mods = append(mods, line)
	}
	return mods, sc.Err()
}

// loadModules loads each listed module with finit_module. A failure is
// logged, not fatal: the missing driver shows up as a clear "disks did not
// appear" or "no agent port" error a moment later, with this line above it.
func loadModules(list string) {
	mods, err := readModuleList(list)
	if err != nil {
		logf("module list %s: %v", list, err)
		return
	}
	for _, m := range mods {
		if err := loadModule(m); err != nil {
			logf("load module %s: %v", m, err)
		}
	}
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
