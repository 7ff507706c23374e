package daemon

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"

	"banger/api"
	"banger/internal/model"
)

// The daemon publishes what happens to VMs and images as events (`banger
// events`): create, start, stop, die, rm for VMs, pull for images and
// kernels. Subscribers are streams (the daemon.events upgrade); a
// subscriber that does not keep up loses events rather than slow the
// daemon down (it is told how many).

const subscriberBuffer = 256

type eventBus struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch      chan event
	mu      sync.Mutex
	dropped int
}

// event is an api.Event with who may see it.
type event struct {
	api.Event
	owner int // the VM's owner uid; -1: everyone (images, kernels)
}

func (b *eventBus) publish(e event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			s.mu.Lock()
			s.dropped++
			s.mu.Unlock()
		}
	}
}

func (b *eventBus) subscribe() (*subscriber, func()) {
	s := &subscriber{ch: make(chan event, subscriberBuffer)}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*subscriber]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}
}

// vmEvent publishes action for rec.
func (d *Daemon) vmEvent(action string, rec model.VMRecord, attrs map[string]string) {
	d.events.publish(event{owner: rec.Spec.OwnerUID, Event: api.Event{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Type: "vm", Action: action,
		ID: rec.ID, Name: rec.Name, Attrs: attrs,
	}})
}

// objectEvent publishes action for an image or kernel (everyone sees it).
func (d *Daemon) objectEvent(typ, action, id, name string) {
	d.events.publish(event{owner: -1, Event: api.Event{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Type: typ, Action: action, ID: id, Name: name,
	}})
}

// eventsStream is the daemon.events upgrade: JSON lines, one per event the
// caller may see and its filters match, until the caller hangs up.
func (d *Daemon) eventsStream(ctx context.Context, raw json.RawMessage) (func(io.ReadWriteCloser), error) {
	var p api.EventsParams
	if err := decode(raw, &p); err != nil {
		return nil, err
	}
	filters, err := parseEventFilters(p.Filters)
	if err != nil {
		return nil, err
	}
	c := callerOf(ctx)
	sub, unsubscribe := d.events.subscribe()
	return func(conn io.ReadWriteCloser) {
		defer unsubscribe()
		defer conn.Close()
		gone := make(chan struct{})
		go func() { io.Copy(io.Discard, conn); close(gone) }()
		enc := json.NewEncoder(conn)
		reported := 0
		for {
			select {
			case <-gone:
				return
			case <-d.bg.Done():
				return
			case e := <-sub.ch:
				if !c.root() && e.owner != -1 && e.owner != int(c.UID) {
					continue
				}
				if !matchEvent(filters, e.Event) {
					continue
				}
				sub.mu.Lock()
				lost := sub.dropped - reported
				reported = sub.dropped
				sub.mu.Unlock()
				if lost > 0 {
					e.Attrs = withAttr(e.Attrs, "lost_before", itoa(lost))
				}
				if enc.Encode(e.Event) != nil {
					return
				}
			}
		}
	}, nil
}

func withAttr(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// parseEventFilters checks type=, action=, name=, id= filters.
func parseEventFilters(fs []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, f := range fs {
		k, v, ok := cutNonEmpty(f)
		switch {
		case !ok:
			return nil, api.Errorf(api.KindInvalidArgument, "event filter %q: want type=, action=, name= or id=", f)
		case k != "type" && k != "action" && k != "name" && k != "id":
			return nil, api.Errorf(api.KindInvalidArgument, "event filter %q: unknown key %q (type, action, name or id)", f, k)
		}
		out[k] = append(out[k], v)
	}
	return out, nil
}

func cutNonEmpty(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

// matchEvent: every filter key must match one of its values (docker's
// rule: values of one key OR, keys AND).
func matchEvent(filters map[string][]string, e api.Event) bool {
	field := map[string]string{"type": e.Type, "action": e.Action, "name": e.Name, "id": e.ID}
	for k, vs := range filters {
		ok := false
		for _, v := range vs {
			if field[k] == v {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
