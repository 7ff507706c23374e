package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"banger/internal/model"
)

const vmColumns = `id, name, state, guest_ip, spec, runtime, created_at, updated_at`

func scanVM(sc interface{ Scan(...any) error }) (model.VMRecord, error) {
	var v model.VMRecord
	var state, ip, spec, rt, created, updated string
	if err := sc.Scan(&v.ID, &v.Name, &state, &ip, &spec, &rt, &created, &updated); err != nil {
		return v, err
	}
	v.State = model.VMState(state)
	if err := jsonUnmarshal(spec, &v.Spec); err != nil {
		return v, fmt.Errorf("vm %s: bad spec: %w", v.ID, err)
	}
	if err := jsonUnmarshal(rt, &v.Runtime); err != nil {
		return v, fmt.Errorf("vm %s: bad runtime: %w", v.ID, err)
	}
	v.Runtime.GuestIP = ip
	v.CreatedAt = parseTime(created)
	v.UpdatedAt = parseTime(updated)
	return v, nil
}

// InsertVM persists a new VM record. A duplicate name or guest IP returns
// an error wrapping ErrConflict.
func (s *Store) InsertVM(ctx context.Context, v model.VMRecord) error {
	if err := model.ValidateVMName(v.Name); err != nil {
		return err
	}
	if !model.ValidState(v.State) {
		return fmt.Errorf("invalid VM state %q", v.State)
	}
	if _, err := netip.ParseAddr(v.Runtime.GuestIP); err != nil {
		return fmt.Errorf("invalid guest IP %q", v.Runtime.GuestIP)
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = time.Now().UTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO vms (id, name, state, guest_ip, image, image_id, kernel, spec, runtime, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.Name, string(v.State), v.Runtime.GuestIP, v.Spec.Image, v.Spec.ImageID, v.Spec.Kernel,
		mustJSON(v.Spec), mustJSON(v.Runtime), v.CreatedAt.UTC().Format(time.RFC3339Nano), now())
	if isUnique(err) {
		if strings.Contains(err.Error(), "vms.name") {
			return fmt.Errorf("VM name %q: %w", v.Name, ErrConflict)
		}
		return fmt.Errorf("guest IP %s: %w", v.Runtime.GuestIP, ErrConflict)
	}
	return err
}

// UpdateVM writes state, spec and runtime of an existing VM.
func (s *Store) UpdateVM(ctx context.Context, v model.VMRecord) error {
	if !model.ValidState(v.State) {
		return fmt.Errorf("invalid VM state %q", v.State)
	}
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET state = ?, image = ?, image_id = ?, kernel = ?, spec = ?, runtime = ?, updated_at = ? WHERE id = ?`,
		string(v.State), v.Spec.Image, v.Spec.ImageID, v.Spec.Kernel, mustJSON(v.Spec), mustJSON(v.Runtime), now(), v.ID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("VM %s: %w", v.ID, ErrNotFound)
	}
	return nil
}

// GetVM returns the VM with the given id.
func (s *Store) GetVM(ctx context.Context, id string) (model.VMRecord, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("VM %q: %w", id, ErrNotFound)
	}
	return v, err
}

// GetVMByName returns the VM whose name is exactly name (no prefix match).
func (s *Store) GetVMByName(ctx context.Context, name string) (model.VMRecord, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("VM %q: %w", name, ErrNotFound)
	}
	return v, err
}

// ListVMs returns every VM ordered by creation time.
func (s *Store) ListVMs(ctx context.Context) ([]model.VMRecord, error) {
	return s.queryVMs(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY created_at, name`)
}

// VMsUsingImage returns the VMs whose spec references the image id.
func (s *Store) VMsUsingImage(ctx context.Context, imageID string) ([]model.VMRecord, error) {
	return s.queryVMs(ctx, `SELECT `+vmColumns+` FROM vms WHERE image_id = ? ORDER BY name`, imageID)
}

// VMsUsingKernel returns the VMs whose spec references the kernel name.
func (s *Store) VMsUsingKernel(ctx context.Context, kernel string) ([]model.VMRecord, error) {
	return s.queryVMs(ctx, `SELECT `+vmColumns+` FROM vms WHERE kernel = ? ORDER BY name`, kernel)
}

func (s *Store) queryVMs(ctx context.Context, q string, args ...any) ([]model.VMRecord, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []model.VMRecord{}
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVM removes the VM row. Missing rows are ErrNotFound.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("VM %s: %w", id, ErrNotFound)
	}
	return nil
}

// NextGuestIP returns the lowest address in prefix that no VM uses and that
// is neither the network, the broadcast nor the bridge's own address
// (prefix.Addr()). Callers serialize allocation (createVMMu) and the UNIQUE
// constraint on guest_ip backs them up.
func (s *Store) NextGuestIP(ctx context.Context, prefix netip.Prefix) (netip.Addr, error) {
	if !prefix.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("bridge prefix %s: only IPv4 is supported", prefix)
	}
	if prefix.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("bridge prefix %s: too small for guests (need /30 or larger)", prefix)
	}
	used := map[netip.Addr]bool{}
	rows, err := s.db.QueryContext(ctx, `SELECT guest_ip FROM vms`)
	if err != nil {
		return netip.Addr{}, err
	}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			rows.Close()
			return netip.Addr{}, err
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			used[a] = true
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return netip.Addr{}, err
	}
	network := prefix.Masked().Addr()
	bridge := prefix.Addr()
	for a := network.Next(); a.IsValid() && prefix.Contains(a); a = a.Next() {
		if !prefix.Contains(a.Next()) { // a is the broadcast address
			break
		}
		if a == bridge || used[a] {
			continue
		}
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free guest address left in %s (%d in use): remove unused VMs", prefix, len(used))
}
