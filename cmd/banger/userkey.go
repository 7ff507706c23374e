package main

import (
	"context"

	"banger/api"
	"banger/client"
)

// Each user reaches their VMs with their own key: the SDK keeps one in the
// user's config dir (created on first use) and the daemon authorizes its
// public half in the caller's VMs (client.GuestAccess). The daemon's own
// key stays with the daemon.

// guestAccess is what a CLI command needs to reach a VM's SSH server as
// the caller: the caller's key, its path (for the system ssh) and a
// known_hosts file of the caller's own.
type guestAccess struct {
	info       api.SSHInfo
	keyPath    string
	knownHosts string
}

func getGuestAccess(ctx context.Context, a *app, name string) (*guestAccess, error) {
	acc, err := a.client().GuestAccess(ctx, name)
	if err != nil {
		return nil, err
	}
	return &guestAccess{info: acc.Info, keyPath: acc.KeyPath, knownHosts: acc.KnownHosts}, nil
}

// dialGuest opens an SSH session to the guest over the daemon socket.
func dialGuest(ctx context.Context, a *app, name string) (*client.Guest, error) {
	return a.client().Guest(ctx, name)
}
