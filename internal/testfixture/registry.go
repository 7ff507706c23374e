package testfixture

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is go-containerregistry's in-process registry wrapped to count
// manifest GETs per repository (HEADs are not fetches).
type Registry struct {
	mu        sync.Mutex
	manifests map[string]int
	handler   http.Handler
}

// NewRegistry returns an empty registry handler.
func NewRegistry() *Registry {
	return &Registry{manifests: map[string]int{}, handler: registry.New(registry.Logger(nilLogger()))}
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/_counts" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(r.Counts())
		return
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
		repo := strings.TrimPrefix(req.URL.Path[:strings.Index(req.URL.Path, "/manifests/")], "/v2/")
		r.mu.Lock()
		r.manifests[repo]++
		r.mu.Unlock()
	}
	r.handler.ServeHTTP(w, req)
}

// ManifestGets returns how many manifest GETs repo has served.
func (r *Registry) ManifestGets(repo string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.manifests[repo]
}

// Counts returns a copy of every repository's manifest GET count.
func (r *Registry) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.manifests {
		out[k] = v
	}
	return out
}

// Serve serves on ln until it is closed.
func (r *Registry) Serve(ln net.Listener) error { return http.Serve(ln, r) }
