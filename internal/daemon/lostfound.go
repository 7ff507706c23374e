package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A directory under the state dir that no row claims may still hold a
// user's work disk (a lost banger.db, a crash between delete steps). The
// daemon never deletes such a directory: it moves it to lost+found and
// says so, and the user decides.
const lostFoundDir = "lost+found"

// moveToLostFound moves path (a VM or image directory) to
// <state>/lost+found/<kind>-<name>-<time> and logs where it went.
func (d *Daemon) moveToLostFound(kind, path string) error {
	lf := filepath.Join(d.cfg.StateDir, lostFoundDir)
	if err := os.MkdirAll(lf, 0o700); err != nil {
		return err
	}
	dst := filepath.Join(lf, fmt.Sprintf("%s-%s-%s", kind, filepath.Base(path), time.Now().UTC().Format("20060102T150405.000000000")))
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("move %s to %s: %w", path, lf, err)
	}
	d.log.Warn("directory with no record moved to lost+found: inspect it, then remove it", "kind", kind, "from", path, "to", dst)
	return nil
}

// vmDirsWithoutStore refuses a state dir whose banger.db is missing while
// VM directories exist: starting on an empty store would treat every work
// disk as an orphan. With reset, the directories go to lost+found instead.
func (d *Daemon) vmDirsWithoutStore(reset, adopt bool) error {
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, "banger.db")); err == nil {
		return nil
	}
	vmsDir := filepath.Join(d.cfg.StateDir, "vms")
	entries, _ := os.ReadDir(vmsDir)
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) == 0 || adopt {
		return nil // adopt: adoptVMDirs re-imports them once the store is open
	}
	if !reset {
		return fmt.Errorf("state dir %s has %d VM directories (%s) but no banger.db: refusing to start so no work disk is touched; "+
			"restore banger.db, or start once with --adopt to re-import them as stopped VMs, or with --reset to move them to %s and begin with an empty state",
			d.cfg.StateDir, len(dirs), vmsDir, filepath.Join(d.cfg.StateDir, lostFoundDir))
	}
	for _, n := range dirs {
		if err := d.moveToLostFound("vm", filepath.Join(vmsDir, n)); err != nil {
			return err
		}
	}
	return nil
}
