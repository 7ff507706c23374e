// Package api is banger's wire protocol: JSON-RPC 2.0, one JSON object per
// line, over a unix socket. It holds the method names, their params and
// results, progress notifications, error kinds, and the client.
package api

import "encoding/json"

// ProtocolVersion is the version of this wire protocol: method names, their
// params and results. The daemon reports it in daemon.ping (PingResult.
// Protocol); a client built for another version refuses to go on (see
// banger/client). It goes up when a change would break a client built for
// the previous one (a method removed or renamed, a field's meaning
// changed); adding a method or an optional field keeps it.
const ProtocolVersion = 1

// MaxRequestBytes bounds one request line; a longer one is answered with an
// invalid_argument error, the rest of the line is skipped (bounded in time),
// and the connection keeps serving the next request.
const MaxRequestBytes = 1 << 20

// Request is a JSON-RPC 2.0 request.
type Request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// Response is a JSON-RPC 2.0 response.
type Response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *WireError      `json:"error,omitempty"`
}

// WireError is the JSON-RPC error object; Data.Kind carries banger's kind.
type WireError struct {
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    *WireErrorData `json:"data,omitempty"`
}

// WireErrorData is the structured part of an error.
type WireErrorData struct {
	Kind Kind `json:"kind"`
}

// Notification is a server→client message without an id. banger sends
// method "progress" with a Progress as params while a call runs.
type Notification struct {
	JSONRPC string   `json:"jsonrpc"`
	Method  string   `json:"method"`
	Params  Progress `json:"params"`
}

// Progress reports one stage of a long call.
type Progress struct {
	Stage   string `json:"stage"`
	Message string `json:"message,omitempty"`
	Done    int64  `json:"done,omitempty"`
	Total   int64  `json:"total,omitempty"`
	// Unit is what Done and Total count: UnitBytes for a download (a
	// client draws a bar with rate and ETA), "" for items (layers
	// applied, steps).
	Unit string `json:"unit,omitempty"`
	// VMID is the id of the VM a vm.create reserved, on every stage after
	// the reservation: a caller that gives up (Ctrl-C on `vm run --rm`)
	// knows exactly which VM to remove, even when one of the same name
	// existed before.
	VMID string `json:"vm_id,omitempty"`
}

// UnitBytes is Progress.Unit of byte counts.
const UnitBytes = "bytes"

// ProgressMethod is the notification method name.
const ProgressMethod = "progress"
