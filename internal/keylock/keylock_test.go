package keylock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMutualExclusionAndBounded(t *testing.T) {
	var m Map
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := m.Lock(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			if n > maxInside.Load() {
				maxInside.Store(n)
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			unlock()
		}()
	}
	wg.Wait()
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders at once", maxInside.Load())
	}
	if m.Len() != 0 {
		t.Fatalf("map kept %d entries", m.Len())
	}
}

func TestDifferentKeysParallel(t *testing.T) {
	var m Map
	u1, _ := m.Lock(context.Background(), "a")
	done := make(chan struct{})
	go func() {
		u2, _ := m.Lock(context.Background(), "b")
		u2()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("lock on b blocked by a")
	}
	u1()
}

func TestContextCancelLeavesNoEntry(t *testing.T) {
	var m Map
	u, _ := m.Lock(context.Background(), "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := m.Lock(ctx, "k"); err == nil {
		t.Fatal("expected ctx error")
	}
	u()
	u() // double unlock is harmless
	if m.Len() != 0 {
		t.Fatalf("len %d", m.Len())
	}
}
