package daemon

import (
	"bufio"
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/api"
	"banger/internal/model"
	"banger/internal/procstat"
)

// vm.stats reads each VM's use from the host: its VMM process (/proc:
// CPU time, RSS), its tap's counters (/proc/net/dev of the daemon's
// namespace), its disk files' allocated blocks, and, when the agent
// answers within guestMemTimeout, the guest's own /proc/meminfo.
//
// CPU percent needs two readings: the daemon keeps the last one per VM
// (statsState), so a stream calling every second gets the last second's
// use. A first call (or one long after the last) reads twice,
// cpuWindow apart, once for all the VMs asked about.
const (
	cpuWindow       = 500 * time.Millisecond
	cpuSampleMaxAge = 30 * time.Second
	cpuSampleMinAge = 200 * time.Millisecond
	guestMemTimeout = 2 * time.Second
)

type cpuSample struct {
	pid int
	cpu time.Duration
	at  time.Time
}

// statsState is the previous CPU reading of each VM.
type statsState struct {
	mu   sync.Mutex           // guards prev
	prev map[string]cpuSample // VM id →
}

// Stats answers vm.stats.
func (s *VMService) Stats(ctx context.Context, p api.VMStatsParams) ([]api.VMStats, error) {
	recs, err := s.statsTargets(ctx, p.Names)
	if err != nil {
		return nil, err
	}
	out := make([]api.VMStats, len(recs))
	now := time.Now()
	cpus := make([]cpuSample, len(recs))
	needWait := false
	for i, r := range recs {
		cpus[i] = cpuSample{pid: -1}
		if !hasVMM(r) {
			continue
		}
		if c, err := procstat.CPUTime(r.Runtime.PID); err == nil {
			cpus[i] = cpuSample{pid: r.Runtime.PID, cpu: c, at: now}
			if _, ok := s.stats.usable(r.ID, cpus[i]); !ok {
				needWait = true
			}
		}
	}
	if needWait {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cpuWindow):
		}
		for i, r := range recs {
			if cpus[i].pid <= 0 {
				continue
			}
			if _, ok := s.stats.usable(r.ID, cpus[i]); !ok {
				s.stats.put(r.ID, cpus[i])
				if c, err := procstat.CPUTime(r.Runtime.PID); err == nil {
					cpus[i] = cpuSample{pid: r.Runtime.PID, cpu: c, at: time.Now()}
				}
			}
		}
	}
	devs, _ := procstat.NetDev() // no counters is not worth failing the call for
	var wg sync.WaitGroup
	for i, r := range recs {
		st := api.VMStats{ID: r.ID, Name: r.Name, State: r.State, MemLimitBytes: int64(r.Spec.MemoryMiB) << 20}
		if c := cpus[i]; c.pid > 0 {
			st.CPUSeconds = c.cpu.Seconds()
			if prev, ok := s.stats.usable(r.ID, c); ok {
				st.CPUPercent = 100 * float64(c.cpu-prev.cpu) / float64(c.at.Sub(prev.at))
			}
			s.stats.put(r.ID, c)
			st.MemRSSBytes, _ = procstat.RSS(c.pid)
		}
		if r.Runtime.Dir != "" {
			st.DiskOverlayBytes, _ = procstat.Allocated(filepath.Join(r.Runtime.Dir, cowName))
			st.DiskWorkBytes, _ = procstat.Allocated(filepath.Join(r.Runtime.Dir, workDiskName))
		}
		if n, ok := devs[r.Runtime.Tap]; ok && r.Runtime.Tap != "" && hasVMM(r) {
			st.NetRxBytes, st.NetTxBytes = n.TxBytes, n.RxBytes // the guest's view
		}
		st.Time = time.Now().UTC().Format(time.RFC3339Nano)
		out[i] = st
		if r.State == model.StateRunning {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out[i].GuestMemUsedBytes = s.guestMemUsed(ctx, r)
			}()
		}
	}
	wg.Wait()
	return out, nil
}

// statsTargets resolves the names, or lists the caller's running VMs.
func (s *VMService) statsTargets(ctx context.Context, names []string) ([]model.VMRecord, error) {
	if len(names) > 0 {
		recs := make([]model.VMRecord, 0, len(names))
		for _, n := range names {
			r, err := s.find(ctx, n)
			if err != nil {
				return nil, err
			}
			recs = append(recs, r)
		}
		return recs, nil
	}
	all, err := s.d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	var recs []model.VMRecord
	for _, r := range all {
		if owns(ctx, r) && (r.State == model.StateRunning || r.State == model.StatePaused) {
			recs = append(recs, r)
		}
	}
	return recs, nil
}

// hasVMM: the record's VMM process is one to read (running or paused).
func hasVMM(r model.VMRecord) bool {
	return (r.State == model.StateRunning || r.State == model.StatePaused) && r.Runtime.PID > 0
}

// usable returns id's previous sample if it is of the same process and
// neither too recent nor too old to average over.
func (st *statsState) usable(id string, now cpuSample) (cpuSample, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	p, ok := st.prev[id]
	age := now.at.Sub(p.at)
	return p, ok && p.pid == now.pid && age >= cpuSampleMinAge && age <= cpuSampleMaxAge
}

func (st *statsState) put(id string, c cpuSample) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.prev == nil {
		st.prev = map[string]cpuSample{}
	}
	if p, ok := st.prev[id]; ok && p.pid == c.pid && c.at.Sub(p.at) < cpuSampleMinAge {
		return // keep the older one: two streams must not starve each other's window
	}
	st.prev[id] = c
}

// guestMemUsed asks the guest for MemTotal − MemAvailable; 0 if it does
// not answer within guestMemTimeout.
func (s *VMService) guestMemUsed(ctx context.Context, r model.VMRecord) int64 {
	lv := s.getLive(r.ID)
	if lv == nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, guestMemTimeout)
	defer cancel()
	c, err := s.agentClient(ctx, r, lv)
	if err != nil {
		return 0
	}
	var out bytes.Buffer
	if code, err := c.Exec(ctx, "cat /proc/meminfo", nil, nil, &out, nil); err != nil || code != 0 {
		return 0
	}
	return memUsed(out.Bytes())
}

// memUsed reads MemTotal − MemAvailable (bytes) from /proc/meminfo.
func memUsed(b []byte) int64 {
	var total, avail int64 = -1, -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			total = n << 10
		case "MemAvailable":
			avail = n << 10
		}
	}
	if total < 0 || avail < 0 || avail > total {
		return 0
	}
	return total - avail
}
