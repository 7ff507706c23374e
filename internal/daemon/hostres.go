package daemon

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"banger/api"
	"banger/internal/model"
	"banger/internal/procstat"
)

// The host's own limits, checked after the driver's (checkCapabilities):
// a VM asks for no more memory than the host has available now, and for
// no disk larger than the state dir's filesystem has free. Both are
// point-in-time checks against one VM (sparse disks fill later, other
// VMs start later), to turn a typo or an impossible request into a clear
// error instead of an OOM kill or a guest I/O error much later.

// memInfoPath is read for MemAvailable (tests point it at a file).
var memInfoPath = "/proc/meminfo"

// hostMemAvailableMiB is MemAvailable from memInfoPath, in MiB.
func hostMemAvailableMiB() (int64, error) {
	b, err := procstat.MemInfo(memInfoPath, "MemAvailable")
	return b >> 20, err
}

// checkHostMemory refuses a boot of memMiB when the host has less
// available. An unreadable meminfo is not a reason to refuse.
func checkHostMemory(memMiB int) error {
	avail, err := hostMemAvailableMiB()
	if err != nil {
		return nil
	}
	if int64(memMiB) > avail {
		return api.Errorf(api.KindInvalidArgument, "memory %d MiB: the host has %d MiB available (MemAvailable in %s): ask for less with --memory, or stop other VMs",
			memMiB, avail, memInfoPath)
	}
	return nil
}

// checkHostDisk refuses disk sizes (flag name -> bytes, disks not made
// yet) whose sum exceeds the free space of the filesystem holding dir.
func checkHostDisk(dir string, sizes []diskSize) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	var sum int64
	var names []string
	for _, s := range sizes {
		sum += s.bytes
		names = append(names, fmt.Sprintf("%s %s", s.flag, model.FormatSize(s.bytes)))
	}
	if sum > free {
		return api.Errorf(api.KindInvalidArgument, "%s: the state dir's filesystem (%s) has %s free: ask for a smaller disk, or free space there",
			strings.Join(names, " + "), dir, model.FormatSize(free))
	}
	return nil
}

// diskSize is one disk a VM will get, by the flag that sizes it.
type diskSize struct {
	flag  string
	bytes int64
}

// newDiskSizes lists the disks of spec not yet made in the VM dir dir
// ("" for a VM not reserved yet: all of them).
func newDiskSizes(spec model.VMSpec, dir string) []diskSize {
	var out []diskSize
	for _, d := range []struct {
		file, flag string
		size       int64
	}{{cowName, "--system-overlay-size", spec.SystemOverlaySize}, {workDiskName, "--work-disk-size", spec.WorkDiskSize}} {
		if dir != "" {
			if _, err := os.Stat(dir + "/" + d.file); err == nil {
				continue
			}
		}
		out = append(out, diskSize{d.flag, d.size})
	}
	return out
}
