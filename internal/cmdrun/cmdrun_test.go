package cmdrun

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var got []string
	cmd := exec.CommandContext(context.Background(), "sh", "-c", "echo one; echo; echo two >&2")
	if err := Lines(context.Background(), cmd, func(l string) { got = append(got, l) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "one,two" {
		t.Fatalf("lines %v", got)
	}
	cmd = exec.Command("sh", "-c", "for i in 1 2 3 4 5 6 7; do echo l$i; done; exit 3")
	err := Lines(context.Background(), cmd, nil)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "l3 | l4 | l5 | l6 | l7") || strings.Contains(err.Error(), "l2") {
		t.Fatalf("failure error: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := Lines(ctx, exec.CommandContext(ctx, "sleep", "10"), nil); err != context.DeadlineExceeded {
		t.Fatalf("cancelled: %v", err)
	}
}
