package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"banger/api"
	"banger/client"
	"banger/internal/testenv/vmhost"
)

// TestSDKCalls calls the typed methods that need no booted VM against a
// real daemon (in a netns, with a fake kernel): each one's params reach
// the daemon and its result decodes, and daemon errors keep their kind.
func TestSDKCalls(t *testing.T) {
	d := vmhost.StartBare(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := client.Connect(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Ping(ctx)
	if err != nil || p.Protocol != client.ProtocolVersion || p.StateDir != d.StateDir {
		t.Fatalf("Ping: %+v %v", p, err)
	}

	// Events: the create and rm below arrive, in order, with the VM's id.
	es, err := c.WatchEvents(ctx, api.EventsParams{Filters: []string{"type=vm"}})
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	defer es.Close()

	var stages []string
	vm, err := c.CreateVM(ctx, api.VMCreateParams{Name: "sdk1", NoStart: true, Labels: map[string]string{"ci": "job-7"}},
		func(p api.Progress) { stages = append(stages, p.Stage) })
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if vm.Name != "sdk1" || vm.ID == "" || vm.Labels["ci"] != "job-7" || len(stages) == 0 {
		t.Fatalf("CreateVM: %+v, progress stages %v", vm, stages)
	}
	if _, err := c.CreateVM(ctx, api.VMCreateParams{Name: "sdk1", NoStart: true}, nil); !api.IsKind(err, api.KindAlreadyExists) {
		t.Errorf("second CreateVM sdk1: %v, want already_exists", err)
	}
	vms, err := c.ListVMs(ctx, api.VMListParams{All: true, Filters: []string{"label=ci=job-7"}})
	if err != nil || len(vms) != 1 || vms[0].ID != vm.ID {
		t.Errorf("ListVMs label=ci=job-7: %+v %v", vms, err)
	}
	if got, err := c.InspectVM(ctx, vm.ID); err != nil || got.Name != "sdk1" {
		t.Errorf("InspectVM by id: %+v %v", got, err)
	}
	if _, err := c.InspectVM(ctx, "nope"); !api.IsKind(err, api.KindNotFound) {
		t.Errorf("InspectVM nope: %v, want not_found", err)
	}
	if _, err := c.ExecOutput(ctx, api.ExecParams{Name: "sdk1", Cmd: []string{"true"}}); err == nil {
		t.Errorf("ExecOutput on a VM that never booted: no error")
	}
	imgs, err := c.ListImages(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Name != "busybox" {
		t.Errorf("ListImages: %+v %v", imgs, err)
	}
	ks, err := c.ListKernels(ctx)
	if err != nil || len(ks) != 1 || ks[0].Name != "fake" {
		t.Errorf("ListKernels: %+v %v", ks, err)
	}
	for name, list := range map[string]func(context.Context) ([]api.CatalogEntry, error){"image": c.ImageCatalog, "kernel": c.KernelCatalog} {
		if cat, err := list(ctx); err != nil || len(cat) == 0 {
			t.Errorf("%s catalog: %+v %v", name, cat, err)
		}
	}
	if sns, err := c.ListSnapshots(ctx); err != nil || len(sns) != 0 {
		t.Errorf("ListSnapshots: %+v %v", sns, err)
	}
	if doc, err := c.Doctor(ctx); err != nil || len(doc.Checks) == 0 {
		t.Errorf("Doctor: %+v %v", doc, err)
	}
	if _, err := c.RemoveVM(ctx, api.VMDeleteParams{Name: "sdk1"}); err != nil {
		t.Fatalf("RemoveVM: %v", err)
	}
	if res, err := c.PruneVMs(ctx); err != nil || len(res.Removed) != 0 {
		t.Errorf("PruneVMs: %+v %v", res, err)
	}

	var events []api.Event
	for len(events) < 2 {
		e, err := es.Next()
		if err != nil {
			t.Fatalf("events so far %+v: %v", events, err)
		}
		events = append(events, e)
	}
	var actions []string
	for _, e := range events {
		if e.ID != vm.ID || e.Name != "sdk1" || e.Time == "" {
			t.Errorf("event %+v: want VM %s sdk1 with a time", e, vm.ID)
		}
		actions = append(actions, e.Action)
	}
	if len(actions) != 2 || actions[0] != "create" || actions[1] != "rm" {
		t.Errorf("events: %v, want [create rm]", actions)
	}

	// A stream method's error keeps its kind too.
	if _, err := c.Proxy(ctx, "nope"); !api.IsKind(err, api.KindNotFound) {
		t.Errorf("Proxy nope: %v, want not_found", err)
	}
	var ae *api.Error
	if _, err := c.StopVM(ctx, "nope", false); !errors.As(err, &ae) {
		t.Errorf("StopVM nope: %T %v, want *api.Error", err, err)
	}
}
