// Package keylock provides one mutex per key (a kernel name, an image name,
// a VM id) in a map that holds only keys someone is using: entries are
// reference-counted and removed when the last holder or waiter leaves, so
// the map never grows without bound.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of per-key locks. The zero value is ready to use.
type Map struct {
	mu    sync.Mutex // guards locks and every entry's refs
	locks map[string]*entry
}

type entry struct {
	ch   chan struct{} // buffered(1): holding the token = holding the lock
	refs int           // holders + waiters
}

// Lock acquires the lock for key, or returns ctx's error if ctx ends first.
// The returned func releases it.
func (m *Map) Lock(ctx context.Context, key string) (func(), error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e := m.locks[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.refs++
	m.mu.Unlock()

	select {
	case e.ch <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-e.ch; m.release(key, e) }) }, nil
	case <-ctx.Done():
		m.release(key, e)
		return nil, ctx.Err()
	}
}

func (m *Map) release(key string, e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.refs--
	if e.refs == 0 {
		delete(m.locks, key)
	}
}

// Len reports how many keys are held or waited on (for tests and metrics).
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}
