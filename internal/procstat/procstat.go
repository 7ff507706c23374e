// Package procstat reads the host-side usage of a VM: its VMM process's
// CPU time and resident memory (/proc/PID), a tap's byte counters
// (/proc/net/dev) and a disk file's allocated bytes. Each is one small
// read, cheap enough for every second of `vm stats` and every tick of the
// idle-stop check.
package procstat

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat. It is USER_HZ,
// fixed at 100 by the kernel's ABI on every architecture banger runs on
// (sysconf(_SC_CLK_TCK) returns the same constant).
const userHZ = 100

// CPUTime is the CPU time (user + system, every thread) the process has
// used since it started.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime (field 14) and stime (field 15). The command
// name (field 2) may hold spaces and parentheses, so fields are counted
// after its last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/PID/stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / userHZ), nil
}

// RSS is the process's resident memory in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseRSS(b)
}

func parseRSS(b []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/PID/status: VmRSS %q: want N kB", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/status: VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/PID/status: no VmRSS line (a kernel thread or a zombie)")
}

// NetCounters are one interface's byte and packet counters as the host
// sees them (for a tap: RX is what the guest sent).
type NetCounters struct {
	RxBytes, RxPackets, TxBytes, TxPackets uint64
}

// NetDev reads /proc/net/dev: the counters of every interface of the
// calling process's network namespace. /proc/net follows the reader's
// namespace, unlike /sys/class/net, which shows the namespace of
// whoever mounted sysfs; the daemon's taps live in the daemon's.
func NetDev() (map[string]NetCounters, error) {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return nil, err
	}
	return parseNetDev(b)
}

func parseNetDev(b []byte) (map[string]NetCounters, error) {
	out := map[string]NetCounters{}
	for i, line := range strings.Split(string(b), "\n") {
		if i < 2 || strings.TrimSpace(line) == "" {
			continue // two header lines
		}
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("/proc/net/dev: line %q has no ':'", line)
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			return nil, fmt.Errorf("/proc/net/dev: line %q: %d counters, want 16", line, len(f))
		}
		var n [10]uint64
		for j := range n {
			v, err := strconv.ParseUint(f[j], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev: %s: counter %q: %w", name, f[j], err)
			}
			n[j] = v
		}
		// receive: bytes packets errs drop fifo frame compressed multicast;
		// transmit: bytes packets ...
		out[strings.TrimSpace(name)] = NetCounters{RxBytes: n[0], RxPackets: n[1], TxBytes: n[8], TxPackets: n[9]}
	}
	return out, nil
}

// Allocated is the bytes a file takes on disk (st_blocks × 512): what a
// sparse disk image really uses, not its apparent size. A missing file
// is 0 bytes, not an error: a VM that never booted has no overlay yet.
func Allocated(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if os.IsNotExist(err) {
			return 0, nil
		}
		return 0, err
	}
	return st.Blocks * 512, nil
}

// MemInfo returns one field of a meminfo file (/proc/meminfo, or a test's
// copy) in bytes: "MemTotal", "MemAvailable", ...
func MemInfo(path, field string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 2 && fs[0] == field+":" {
			kb, err := strconv.ParseInt(fs[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %q: %w", path, field, fs[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s line", path, field)
}
