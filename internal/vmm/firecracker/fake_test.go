package firecracker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// fakeFirecracker stands in for the Firecracker API server, which cannot
// run here (no KVM, no binary). It checks every request against the
// documented API (src/firecracker/swagger/firecracker.yaml and the
// behaviour in docs/api_requests): method, path, body schema (types,
// required fields, enums, no unknown fields), referenced files existing,
// pre-boot-only resources, InstanceStart only after /boot-source. Success
// is 204 No Content; a violation is 400 with {"fault_message": ...}, as
// Firecracker answers. After InstanceStart it serves hybrid vsock on the
// configured uds_path: "CONNECT <port>\n" -> "OK <host port>\n", then the
// agent stand-in says "hello\n" and echoes.
type fakeFirecracker struct {
	console io.Writer // the guest serial console (Firecracker's stdout)
	onStop  func()    // SendCtrlAltDel: the guest powers off

	// dir is Firecracker's working directory: relative paths (the
	// driver's drive links) are resolved against it.
	dir string

	mu         sync.Mutex
	requests   []string // "PUT /path" in arrival order, accepted ones only
	bodies     map[string]map[string]any
	bootSource bool
	started    bool
	paused     bool
	vsockLn    net.Listener
	violations []string
}

type field struct {
	typ      string // string, integer, boolean, object, array
	def      string // an object's (or an array's items') definition, checked too
	required bool
	enum     []string
	min, max int // integers; max 0 = unbounded
}

// schemas are the swagger definitions the driver may send.
var schemas = map[string]map[string]field{
	"Logger": {
		"level":           {typ: "string", enum: []string{"Error", "Warning", "Info", "Debug", "Trace", "Off"}},
		"log_path":        {typ: "string"},
		"show_level":      {typ: "boolean"},
		"show_log_origin": {typ: "boolean"},
		"module":          {typ: "string"},
	},
	"Metrics": {"metrics_path": {typ: "string", required: true}},
	"MachineConfiguration": {
		"cpu_template":      {typ: "string", enum: []string{"C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None"}},
		"smt":               {typ: "boolean"},
		"mem_size_mib":      {typ: "integer", required: true, min: 1},
		"track_dirty_pages": {typ: "boolean"},
		"vcpu_count":        {typ: "integer", required: true, min: 1, max: 32},
		"huge_pages":        {typ: "string", enum: []string{"None", "Transparent", "2M"}},
	},
	"BootSource": {
		"boot_args":         {typ: "string"},
		"initrd_path":       {typ: "string"},
		"kernel_image_path": {typ: "string", required: true},
	},
	"Drive": {
		"drive_id":       {typ: "string", required: true},
		"partuuid":       {typ: "string"},
		"is_root_device": {typ: "boolean", required: true},
		"cache_type":     {typ: "string", enum: []string{"Unsafe", "Writeback"}},
		"is_read_only":   {typ: "boolean"},
		"path_on_host":   {typ: "string"},
		"rate_limiter":   {typ: "object"},
		"io_engine":      {typ: "string", enum: []string{"Sync", "Async"}},
		"socket":         {typ: "string"},
	},
	"NetworkInterface": {
		"guest_mac":       {typ: "string"},
		"host_dev_name":   {typ: "string", required: true},
		"iface_id":        {typ: "string", required: true},
		"mtu":             {typ: "integer", min: 68, max: 65535},
		"rx_rate_limiter": {typ: "object"},
		"tx_rate_limiter": {typ: "object"},
	},
	"Vsock": {
		"guest_cid": {typ: "integer", required: true, min: 3},
		"uds_path":  {typ: "string", required: true},
		"vsock_id":  {typ: "string"},
	},
	"InstanceActionInfo": {
		"action_type": {typ: "string", required: true, enum: []string{"FlushMetrics", "InstanceStart", "SendCtrlAltDel"}},
	},
	"Vm": {"state": {typ: "string", required: true, enum: []string{"Paused", "Resumed"}}},
	"SnapshotCreateParams": {
		"mem_file_path": {typ: "string", required: true},
		"snapshot_path": {typ: "string", required: true},
		"snapshot_type": {typ: "string", enum: []string{"Full", "Diff"}},
	},
	"SnapshotLoadParams": {
		"enable_diff_snapshots": {typ: "boolean"},
		"track_dirty_pages":     {typ: "boolean"},
		"mem_file_path":         {typ: "string"},
		"mem_backend":           {typ: "object", def: "MemoryBackend"},
		"snapshot_path":         {typ: "string", required: true},
		"resume_vm":             {typ: "boolean"},
		"network_overrides":     {typ: "array", def: "NetworkOverride"},
		"vsock_override":        {typ: "object", def: "VsockOverride"},
		"clock_realtime":        {typ: "boolean"},
	},
	"MemoryBackend": {
		"backend_type": {typ: "string", required: true, enum: []string{"File", "Uffd"}},
		"backend_path": {typ: "string", required: true},
	},
	"NetworkOverride": {
		"iface_id":      {typ: "string", required: true},
		"host_dev_name": {typ: "string", required: true},
	},
	"VsockOverride": {"uds_path": {typ: "string", required: true}},
}

func newFake(console io.Writer, onStop func(), dir string) *fakeFirecracker {
	return &fakeFirecracker{console: console, onStop: onStop, dir: dir, bodies: map[string]map[string]any{}}
}

// abs resolves p against the working directory.
func (f *fakeFirecracker) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(f.dir, p)
}

func (f *fakeFirecracker) fail(w http.ResponseWriter, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	f.violations = append(f.violations, msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"fault_message": msg})
}

func (f *fakeFirecracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		state := "Not started"
		if f.started {
			state = map[bool]string{true: "Paused", false: "Running"}[f.paused]
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "anonymous-instance", "state": state, "vmm_version": "1.12.0", "app_name": "Firecracker"})
		return
	case r.Method == http.MethodPatch && r.URL.Path == "/vm":
	case r.Method == http.MethodPut:
	default:
		f.fail(w, "%s %s: not an operation the driver needs", r.Method, r.URL.Path)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.fail(w, "Content-Type %q, want application/json", ct)
		return
	}
	def, id := "", ""
	switch p := r.URL.Path; {
	case p == "/vm":
		def = "Vm"
	case p == "/snapshot/create":
		def = "SnapshotCreateParams"
	case p == "/snapshot/load":
		def = "SnapshotLoadParams"
	case p == "/logger":
		def = "Logger"
	case p == "/metrics":
		def = "Metrics"
	case p == "/machine-config":
		def = "MachineConfiguration"
	case p == "/boot-source":
		def = "BootSource"
	case strings.HasPrefix(p, "/drives/"):
		def, id = "Drive", strings.TrimPrefix(p, "/drives/")
	case strings.HasPrefix(p, "/network-interfaces/"):
		def, id = "NetworkInterface", strings.TrimPrefix(p, "/network-interfaces/")
	case p == "/vsock":
		def = "Vsock"
	case p == "/actions":
		def = "InstanceActionInfo"
	default:
		f.fail(w, "unknown path %s", p)
		return
	}
	if def != "InstanceActionInfo" && def != "Vm" && def != "SnapshotCreateParams" && f.started {
		f.fail(w, "PUT %s is pre-boot only", r.URL.Path)
		return
	}
	var body map[string]any
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		f.fail(w, "PUT %s: body is not a JSON object: %v", r.URL.Path, err)
		return
	}
	if msg := validate(def, body); msg != "" {
		f.fail(w, "PUT %s: %s", r.URL.Path, msg)
		return
	}
	switch def {
	case "Vm":
		if !f.started {
			f.fail(w, "PATCH /vm: the microVM is not running")
			return
		}
		f.paused = body["state"] == "Paused"
	case "SnapshotCreateParams":
		if msg := f.createSnapshot(body); msg != "" {
			f.fail(w, "%s", msg)
			return
		}
	case "SnapshotLoadParams":
		if msg := f.loadSnapshot(body); msg != "" {
			f.fail(w, "%s", msg)
			return
		}
	case "Drive":
		if body["drive_id"] != id || id == "" {
			f.fail(w, "drive_id %v does not match path id %q", body["drive_id"], id)
			return
		}
		if msg := exists(map[string]any{"path_on_host": f.abs(fmt.Sprint(body["path_on_host"])), "is_read_only": body["is_read_only"]}, "path_on_host", true); msg != "" {
			f.fail(w, "%s", msg)
			return
		}
	case "NetworkInterface":
		if body["iface_id"] != id || id == "" {
			f.fail(w, "iface_id %v does not match path id %q", body["iface_id"], id)
			return
		}
		if mac, ok := body["guest_mac"].(string); ok {
			if _, err := net.ParseMAC(mac); err != nil {
				f.fail(w, "guest_mac %q: %v", mac, err)
				return
			}
		}
	case "Logger":
		// Firecracker opens the log without O_CREAT.
		if msg := exists(body, "log_path", false); msg != "" {
			f.fail(w, "%s", msg)
			return
		}
	case "Metrics":
		if msg := exists(body, "metrics_path", true); msg != "" {
			f.fail(w, "%s", msg)
			return
		}
	case "BootSource":
		for _, k := range []string{"kernel_image_path", "initrd_path"} {
			if msg := exists(body, k, k == "kernel_image_path"); msg != "" {
				f.fail(w, "%s", msg)
				return
			}
		}
		f.bootSource = true
	case "InstanceActionInfo":
		switch body["action_type"] {
		case "InstanceStart":
			if f.started {
				f.fail(w, "InstanceStart: the microVM is already running")
				return
			}
			if !f.bootSource {
				f.fail(w, "InstanceStart before /boot-source: the kernel is not configured")
				return
			}
			if err := f.start(); err != nil {
				f.fail(w, "InstanceStart: %v", err)
				return
			}
		case "SendCtrlAltDel":
			if !f.started {
				f.fail(w, "SendCtrlAltDel: the microVM is not running")
				return
			}
			if f.onStop != nil {
				defer f.onStop()
			}
		}
	}
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.bodies[r.URL.Path] = body
	w.WriteHeader(http.StatusNoContent)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush() // before a deferred onStop ends the process
	}
}

// fakeState is what the stand-in's snapshot_path holds: the
// configuration a real state file carries (drive paths as given, the
// interfaces, the vsock socket).
type fakeState struct {
	Drives map[string]string `json:"drives"`
	Ifaces []string          `json:"ifaces"`
	Vsock  string            `json:"vsock"`
}

// createSnapshot writes the state and a memory file; the VM must be paused.
func (f *fakeFirecracker) createSnapshot(body map[string]any) string {
	if !f.started || !f.paused {
		return "PUT /snapshot/create: the microVM must be paused (PATCH /vm Paused) first"
	}
	st := fakeState{Drives: map[string]string{}}
	for path, b := range f.bodies {
		switch {
		case strings.HasPrefix(path, "/drives/"):
			st.Drives[b["drive_id"].(string)] = b["path_on_host"].(string)
		case strings.HasPrefix(path, "/network-interfaces/"):
			st.Ifaces = append(st.Ifaces, b["iface_id"].(string))
		case path == "/vsock":
			st.Vsock = b["uds_path"].(string)
		}
	}
	j, _ := json.Marshal(st)
	if err := os.WriteFile(body["snapshot_path"].(string), j, 0o600); err != nil {
		return "snapshot_path: " + err.Error()
	}
	if err := os.WriteFile(body["mem_file_path"].(string), []byte("fake guest memory"), 0o600); err != nil {
		return "mem_file_path: " + err.Error()
	}
	return ""
}

// loadSnapshot restores on a Firecracker given only its logger and
// metrics: the files exist, exactly one memory source, the saved drives
// open from this process's working directory, overrides name what the
// state has.
func (f *fakeFirecracker) loadSnapshot(body map[string]any) string {
	for p := range f.bodies {
		if p != "/logger" && p != "/metrics" {
			return "PUT /snapshot/load: only the logger and metrics may be configured before a load, not " + p
		}
	}
	_, file := body["mem_file_path"]
	_, backend := body["mem_backend"]
	if file == backend {
		return "PUT /snapshot/load: exactly one of mem_file_path and mem_backend"
	}
	mem, _ := body["mem_file_path"].(string)
	if backend {
		mem = body["mem_backend"].(map[string]any)["backend_path"].(string)
	}
	if _, err := os.Stat(mem); err != nil {
		return "memory file: " + err.Error()
	}
	j, err := os.ReadFile(body["snapshot_path"].(string))
	if err != nil {
		return "snapshot_path: " + err.Error()
	}
	var st fakeState
	if err := json.Unmarshal(j, &st); err != nil {
		return "snapshot_path: not a state file"
	}
	for id, p := range st.Drives {
		if fi, err := os.Stat(f.abs(p)); err != nil || !fi.Mode().IsRegular() {
			return fmt.Sprintf("restore drive %s: %s does not open from %s", id, p, f.dir)
		}
		f.bodies["/drives/"+id] = map[string]any{"drive_id": id, "path_on_host": p}
	}
	if nos, ok := body["network_overrides"].([]any); ok {
		for _, no := range nos {
			if !contains(st.Ifaces, no.(map[string]any)["iface_id"].(string)) {
				return fmt.Sprintf("network_overrides: no interface %v in the snapshot", no.(map[string]any)["iface_id"])
			}
		}
	}
	vs := st.Vsock
	if vo, ok := body["vsock_override"].(map[string]any); ok {
		vs = vo["uds_path"].(string)
	}
	f.bodies["/vsock"] = map[string]any{"uds_path": vs}
	if err := f.start(); err != nil {
		return "restore: " + err.Error()
	}
	f.paused = body["resume_vm"] != true
	return ""
}

// start "boots": console output, and the vsock uds starts listening.
func (f *fakeFirecracker) start() error {
	f.started = true
	fmt.Fprintln(f.console, "fake-firecracker: guest booted")
	// "fake.flood=N" in boot_args: the guest writes N bytes to its console.
	if b, ok := f.bodies["/boot-source"]["boot_args"].(string); ok {
		for _, a := range strings.Fields(b) {
			if v, ok := strings.CutPrefix(a, "fake.flood="); ok {
				n, _ := strconv.Atoi(v)
				line := []byte(strings.Repeat("x", 1023) + "\n")
				for ; n > 0; n -= len(line) {
					f.console.Write(line)
				}
			}
		}
	}
	v, ok := f.bodies["/vsock"]
	if !ok {
		return nil
	}
	os.Remove(hostPath(v["uds_path"].(string)))
	ln, err := net.Listen("unix", hostPath(v["uds_path"].(string)))
	if err != nil {
		return err
	}
	f.vsockLn = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveHybrid(c)
		}
	}()
	return nil
}

// serveHybrid is Firecracker's side of a host-initiated vsock connection,
// with a guest agent on port 1024 that greets and echoes.
func serveHybrid(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	port, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
	if !ok || port != "1024" { // no guest listener: Firecracker closes
		return
	}
	fmt.Fprintf(c, "OK 1073741824\n")
	fmt.Fprintf(c, "hello\n")
	io.Copy(c, r)
}

func (f *fakeFirecracker) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vsockLn != nil {
		f.vsockLn.Close()
	}
}

func exists(body map[string]any, key string, required bool) string {
	p, ok := body[key].(string)
	if !ok {
		if required {
			return key + " missing"
		}
		return ""
	}
	fi, err := os.Stat(hostPath(p))
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Sprintf("%s %q: not an existing file", key, p)
	}
	if jailed.root != "" {
		write := key == "path_on_host" && body["is_read_only"] != true || key == "log_path" || key == "metrics_path"
		if !jailed.may(fi, write) {
			return fmt.Sprintf("%s %q: mode %v owner %d:%d, not usable by the jail's %d:%d", key, p, fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, fi.Sys().(*syscall.Stat_t).Gid, jailed.uid, jailed.gid)
		}
	}
	return ""
}

// jailed is the stand-in jailer's chroot and credentials, handed to the
// stand-in Firecracker in the environment (it cannot chroot: it is this
// test binary, which lives outside): every path it is given is resolved
// under root, and must be usable by uid:gid.
var jailed jailInfo

type jailInfo struct {
	root     string
	uid, gid uint32
}

func hostPath(p string) string {
	if jailed.root == "" {
		return p
	}
	if !strings.HasPrefix(p, "/") {
		return p // relative: the jailer's cwd is the chroot
	}
	return jailed.root + p
}

// may says whether the jail's uid:gid may read (and write) a file.
func (j *jailInfo) may(fi os.FileInfo, write bool) bool {
	st := fi.Sys().(*syscall.Stat_t)
	m := fi.Mode().Perm()
	var bits os.FileMode
	switch {
	case st.Uid == j.uid:
		bits = m >> 6
	case st.Gid == j.gid:
		bits = m >> 3
	default:
		bits = m
	}
	return bits&4 != 0 && (!write || bits&2 != 0)
}

// validate checks body against the named definition.
func validate(def string, body map[string]any) string {
	sch := schemas[def]
	for k := range body {
		if _, ok := sch[k]; !ok {
			return fmt.Sprintf("unknown field %q in %s", k, def)
		}
	}
	for k, f := range sch {
		v, ok := body[k]
		if !ok {
			if f.required {
				return fmt.Sprintf("missing required field %q in %s", k, def)
			}
			continue
		}
		switch f.typ {
		case "string":
			s, ok := v.(string)
			if !ok {
				return fmt.Sprintf("%s.%s: want a string, got %T", def, k, v)
			}
			if len(f.enum) > 0 && !contains(f.enum, s) {
				return fmt.Sprintf("%s.%s: %q not one of %v", def, k, s, f.enum)
			}
		case "boolean":
			if _, ok := v.(bool); !ok {
				return fmt.Sprintf("%s.%s: want a boolean, got %T", def, k, v)
			}
		case "integer":
			n, ok := v.(json.Number)
			if !ok {
				return fmt.Sprintf("%s.%s: want an integer, got %T", def, k, v)
			}
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return fmt.Sprintf("%s.%s: %s is not an integer", def, k, n)
			}
			if i < int64(f.min) || (f.max > 0 && i > int64(f.max)) {
				return fmt.Sprintf("%s.%s: %d out of range", def, k, i)
			}
		case "object":
			m, ok := v.(map[string]any)
			if !ok {
				return fmt.Sprintf("%s.%s: want an object, got %T", def, k, v)
			}
			if f.def != "" {
				if msg := validate(f.def, m); msg != "" {
					return msg
				}
			}
		case "array":
			items, ok := v.([]any)
			if !ok {
				return fmt.Sprintf("%s.%s: want an array, got %T", def, k, v)
			}
			for _, it := range items {
				m, ok := it.(map[string]any)
				if !ok {
					return fmt.Sprintf("%s.%s: want objects, got %T", def, k, it)
				}
				if msg := validate(f.def, m); msg != "" {
					return msg
				}
			}
		}
	}
	return ""
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// runFakeBinary is main() when the test binary is re-executed as
// "firecracker --api-sock PATH": the driver's real spawn path runs it.
func runFakeBinary(args []string) int {
	if r := os.Getenv(fakeRootEnv); r != "" {
		jailed.root = r
		fmt.Sscan(os.Getenv(fakeUIDEnv), &jailed.uid)
		fmt.Sscan(os.Getenv(fakeGIDEnv), &jailed.gid)
	}
	sock := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--api-sock" {
			sock = args[i+1]
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: --api-sock missing")
		return 2
	}
	sock = hostPath(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 1
	}
	stop := make(chan struct{})
	var once sync.Once
	wd, _ := os.Getwd()
	fake := newFake(os.Stdout, func() { once.Do(func() { close(stop) }) }, wd)
	go http.Serve(ln, fake)
	<-stop
	fake.close()
	ln.Close()
	os.Remove(sock)
	fmt.Println("fake-firecracker: guest powered off")
	return 0
}

const (
	fakeJailerEnv = "BANGER_TEST_FAKE_JAILER"
	fakeRootEnv   = "BANGER_TEST_FAKE_FC_ROOT"
	fakeUIDEnv    = "BANGER_TEST_FAKE_FC_UID"
	fakeGIDEnv    = "BANGER_TEST_FAKE_FC_GID"
)

// runFakeJailer is main() when the test binary is re-executed as the
// jailer. It checks the documented command line (docs/jailer.md): --id
// of [A-Za-z0-9-]{1,64}; --exec-file an existing file whose name has
// "firecracker" in it; numeric --uid and --gid; an absolute, existing
// --chroot-base-dir; Firecracker's own arguments after "--". Then it
// does what the jailer does that the stand-in can: the chroot dir
// BASE/<exec name>/ID/root, and Firecracker's command line (`--id ID
// --start-time-us …` before the given arguments). Chroot and the uid drop
// it leaves to the stand-in Firecracker's path and permission checks.
func runFakeJailer(args []string) int {
	flags := map[string]string{}
	i := 0
	for ; i < len(args) && args[i] != "--"; i += 2 {
		if i+1 >= len(args) || !strings.HasPrefix(args[i], "--") {
			fmt.Fprintf(os.Stderr, "fake jailer: bad argument %q\n", args[i])
			return 2
		}
		flags[args[i]] = args[i+1]
	}
	if i >= len(args) {
		fmt.Fprintln(os.Stderr, "fake jailer: no -- before the firecracker arguments")
		return 2
	}
	fc := args[i+1:]
	for _, k := range []string{"--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir"} {
		if flags[k] == "" {
			fmt.Fprintf(os.Stderr, "fake jailer: %s missing\n", k)
			return 2
		}
	}
	for k := range flags {
		if !contains([]string{"--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--netns", "--daemonize", "--new-pid-ns", "--cgroup", "--resource-limit", "--cgroup-version", "--parent-cgroup"}, k) {
			fmt.Fprintf(os.Stderr, "fake jailer: unknown argument %s\n", k)
			return 2
		}
	}
	id := flags["--id"]
	if len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		fmt.Fprintf(os.Stderr, "fake jailer: invalid --id %q\n", id)
		return 2
	}
	exe := flags["--exec-file"]
	if fi, err := os.Stat(exe); err != nil || !fi.Mode().IsRegular() || !strings.Contains(filepathBase(exe), "firecracker") {
		fmt.Fprintf(os.Stderr, "fake jailer: --exec-file %q: not a file named *firecracker*\n", exe)
		return 2
	}
	var uid, gid uint32
	if _, err := fmt.Sscan(flags["--uid"], &uid); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer: --uid not a number")
		return 2
	}
	if _, err := fmt.Sscan(flags["--gid"], &gid); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer: --gid not a number")
		return 2
	}
	base := flags["--chroot-base-dir"]
	if !strings.HasPrefix(base, "/") {
		fmt.Fprintln(os.Stderr, "fake jailer: --chroot-base-dir not absolute")
		return 2
	}
	root := base + "/" + filepathBase(exe) + "/" + id + "/root"
	if err := os.MkdirAll(root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 1
	}
	if err := os.Chdir(root); err != nil {
		fmt.Fprintln(os.Stderr, "fake jailer:", err)
		return 1
	}
	env := []string{fakeEnv + "=1", fakeRootEnv + "=" + root, fmt.Sprintf("%s=%d", fakeUIDEnv, uid), fmt.Sprintf("%s=%d", fakeGIDEnv, gid)}
	argv := append([]string{"firecracker", "--id", id, "--start-time-us", "0", "--start-time-cpu-us", "0"}, fc...)
	err := syscall.Exec(exe, argv, env)
	fmt.Fprintln(os.Stderr, "fake jailer: exec:", err)
	return 1
}

func filepathBase(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}
