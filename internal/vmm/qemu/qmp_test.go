package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"
)

// fakeMigrationQMP answers query-migrate with the statuses in seq (the last
// repeats), moving past "active" only once migrate_cancel came; it returns
// the commands it saw. The real fault (a daemon killed while QEMU writes
// the state) is TestSnapshotDaemonKilled's; this pins the order of calls.
func fakeMigrationQMP(t *testing.T, before string, after []string) (*QMP, <-chan []string) {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	seen := make(chan []string, 1)
	go func() {
		var cmds []string
		defer func() { seen <- cmds }()
		r := bufio.NewReader(server)
		cancelled, i := false, 0
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var req struct {
				Execute string `json:"execute"`
			}
			json.Unmarshal(line, &req)
			cmds = append(cmds, req.Execute)
			ret := `{}`
			switch req.Execute {
			case "query-migrate":
				st := before
				if cancelled {
					st = after[min(i, len(after)-1)]
					i++
				}
				ret = `{"status":"` + st + `"}`
			case "migrate_cancel":
				cancelled = true
			}
			server.Write([]byte(`{"return":` + ret + "}\n"))
		}
	}()
	return &QMP{conn: client, r: bufio.NewReader(client)}, seen
}

func TestEndMigration(t *testing.T) {
	for _, c := range []struct {
		name, before string
		after        []string
		want         []string
	}{
		{"none", "none", nil, []string{"query-migrate"}},
		{"completed", "completed", nil, []string{"query-migrate"}},
		{"in flight", "active", []string{"cancelling", "cancelled"},
			[]string{"query-migrate", "migrate_cancel", "query-migrate", "query-migrate"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			q, seen := fakeMigrationQMP(t, c.before, c.after)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := endMigration(ctx, q); err != nil {
				t.Fatal(err)
			}
			q.Close()
			got := <-seen
			if len(got) != len(c.want) {
				t.Fatalf("commands %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("commands %v, want %v", got, c.want)
				}
			}
		})
	}
	t.Run("never ends", func(t *testing.T) {
		q, _ := fakeMigrationQMP(t, "active", []string{"cancelling"})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := endMigration(ctx, q); err == nil {
			t.Fatal("endMigration returned nil for a migration that never ended")
		}
	})
}
