package main

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

const havePortIO = true

// outb writes one byte to an I/O port (pit_amd64.s); the caller must hold
// the port through ioperm.
func outb(port uint16, val uint8)

const (
	pitCommandPort = 0x43
	// Channel 0, lobyte/hibyte access, mode 0 (interrupt on terminal
	// count), binary. Writing only the command, not a new count, leaves
	// the counter expired, so no further edge is scheduled.
	pitChannel0Mode0 = 0x30
)

func stopPIT() error {
	// ioperm grants the port to the calling thread only: without the
	// lock the goroutine can move to another thread between the syscall
	// and the OUTB, which then faults and kills PID 1 (seen once in a
	// bench's ~20 cold boots: "Attempted to kill init! exitcode=0x00000200").
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(pitCommandPort, 1, 1); err != nil {
		return fmt.Errorf("ioperm 0x%x: %w", pitCommandPort, err)
	}
	outb(pitCommandPort, pitChannel0Mode0)
	return unix.Ioperm(pitCommandPort, 1, 0)
}
