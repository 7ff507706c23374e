package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"banger/internal/model"
)

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// UpsertImage inserts or replaces the image row keyed by id. A different
// image already holding the name is ErrConflict.
func (s *Store) UpsertImage(ctx context.Context, img model.Image) error {
	if img.CreatedAt.IsZero() {
		img.CreatedAt = time.Now().UTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO images (id, name, data, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET name = excluded.name, data = excluded.data`,
		img.ID, img.Name, mustJSON(img), img.CreatedAt.UTC().Format(time.RFC3339Nano))
	if isUnique(err) {
		return fmt.Errorf("image name %q: %w", img.Name, ErrConflict)
	}
	return err
}

func scanImage(sc interface{ Scan(...any) error }) (model.Image, error) {
	var img model.Image
	var data string
	if err := sc.Scan(&data); err != nil {
		return img, err
	}
	err := jsonUnmarshal(data, &img)
	return img, err
}

// GetImage finds an image by exact name, or by id.
func (s *Store) GetImage(ctx context.Context, nameOrID string) (model.Image, error) {
	img, err := scanImage(s.db.QueryRowContext(ctx, `SELECT data FROM images WHERE name = ? OR id = ? ORDER BY name = ? DESC LIMIT 1`, nameOrID, nameOrID, nameOrID))
	if errors.Is(err, sql.ErrNoRows) {
		return img, fmt.Errorf("image %q: %w", nameOrID, ErrNotFound)
	}
	return img, err
}

// ListImages returns every image ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]model.Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM images ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []model.Image{}
	for rows.Next() {
		img, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	return out, rows.Err()
}

// DeleteImage removes the image row by id.
func (s *Store) DeleteImage(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	return nil
}

// UpsertKernel records a pulled kernel.
func (s *Store) UpsertKernel(ctx context.Context, k model.Kernel) error {
	if k.PulledAt.IsZero() {
		k.PulledAt = time.Now().UTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO kernels (name, data, pulled_at) VALUES (?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET data = excluded.data, pulled_at = excluded.pulled_at`,
		k.Name, mustJSON(k), k.PulledAt.UTC().Format(time.RFC3339Nano))
	return err
}

// GetKernel returns a kernel by name.
func (s *Store) GetKernel(ctx context.Context, name string) (model.Kernel, error) {
	var k model.Kernel
	var data string
	err := s.db.QueryRowContext(ctx, `SELECT data FROM kernels WHERE name = ?`, name).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return k, fmt.Errorf("kernel %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return k, err
	}
	return k, jsonUnmarshal(data, &k)
}

// ListKernels returns every kernel ordered by name.
func (s *Store) ListKernels(ctx context.Context) ([]model.Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT data FROM kernels ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []model.Kernel{}
	for rows.Next() {
		var data string
		var k model.Kernel
		if err := rows.Scan(&data); err != nil {
			return nil, err
		}
		if err := jsonUnmarshal(data, &k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes the kernel row.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM kernels WHERE name = ?`, name)
	return err
}
