package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary be its own sftp subsystem: the SSH server
// runs /proc/self/exe with sftpServerArg, which is this binary here.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == sftpServerArg {
		os.Exit(sftpServerMain())
	}
	os.Exit(m.Run())
}
