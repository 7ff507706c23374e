package main

import (
	"errors"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// sftpServerArg makes banger-init an SFTP server on stdin/stdout instead
// of PID 1: the sftp subsystem runs it as a child (as OpenSSH runs
// sftp-server) in root's home directory, so relative paths resolve there
// through the process's own working directory. The in-process server with
// sftp.WithServerWorkingDirectory also joined the *target* of every
// relative symlink to that directory (pkg/sftp v1.13: toLocalPath on
// Targetpath), so `vm cp` stored "f" as "/root/f".
const sftpServerArg = "sftp-server"

// sftpServerMain serves one SFTP session on stdin/stdout; its status is
// the process's exit status.
func sftpServerMain() int {
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{os.Stdin, os.Stdout})
	if err != nil {
		os.Stderr.WriteString("banger-init sftp-server: " + err.Error() + "\n")
		return 1
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		return 1
	}
	return 0
}
