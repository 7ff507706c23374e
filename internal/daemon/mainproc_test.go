package daemon

import (
	"reflect"
	"testing"

	"banger/api"
	"banger/internal/model"
)

func TestResolveMain(t *testing.T) {
	debian := model.ImageConfig{Cmd: []string{"/bin/bash"}, WorkingDir: "/root"}
	app := model.ImageConfig{Entrypoint: []string{"/bin/httpd", "-f"}, Cmd: []string{"-p", "80"}, WorkingDir: "/www", User: "nobody"}
	cmdOnly := model.ImageConfig{Cmd: []string{"nginx", "-g", "daemon off;"}}
	systemd := model.ImageConfig{Cmd: []string{"/lib/systemd/systemd"}}
	empty := []string{}
	for _, tc := range []struct {
		name string
		cfg  model.ImageConfig
		p    api.VMCreateParams
		want []string // nil: no main process
		att  bool
	}{
		{"shell cmd: none", debian, api.VMCreateParams{}, nil, false},
		{"init cmd: none", systemd, api.VMCreateParams{}, nil, false},
		{"entrypoint+cmd", app, api.VMCreateParams{}, []string{"/bin/httpd", "-f", "-p", "80"}, false},
		{"service cmd", cmdOnly, api.VMCreateParams{}, []string{"nginx", "-g", "daemon off;"}, false},
		{"-- CMD on a shell image", debian, api.VMCreateParams{Cmd: []string{"sleep", "1"}}, []string{"sleep", "1"}, false},
		{"-- CMD after an entrypoint", app, api.VMCreateParams{Cmd: []string{"-p", "8080"}}, []string{"/bin/httpd", "-f", "-p", "8080"}, false},
		{"--entrypoint drops Cmd", app, api.VMCreateParams{Entrypoint: &[]string{"/bin/sh"}}, []string{"/bin/sh"}, false},
		{"--entrypoint '' -- CMD", app, api.VMCreateParams{Entrypoint: &empty, Cmd: []string{"id"}}, []string{"id"}, false},
		{"vm run, shell image", debian, api.VMCreateParams{Foreground: true}, []string{"/bin/bash"}, true},
		{"vm run, no command at all", model.ImageConfig{}, api.VMCreateParams{Foreground: true}, nil, false},
	} {
		m, err := resolveMain(tc.cfg, tc.p)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var got []string
		if m != nil {
			got = m.Argv
			if m.Attached != tc.att || m.Restart != "no" {
				t.Errorf("%s: %+v", tc.name, m)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: argv %q, want %q", tc.name, got, tc.want)
		}
	}
	m, _ := resolveMain(app, api.VMCreateParams{WorkingDir: "/tmp", Restart: "always"})
	if m.WorkingDir != "/tmp" || m.User != "nobody" || m.Restart != "always" {
		t.Errorf("overrides: %+v", m)
	}
	if _, err := resolveMain(model.ImageConfig{}, api.VMCreateParams{Entrypoint: &empty}); err == nil {
		t.Error("an empty explicit main process was accepted")
	}
}

func TestValidateProcessParams(t *testing.T) {
	for _, bad := range []api.VMCreateParams{
		{Init: "systemd"}, {Restart: "sometimes"}, {Env: []string{"NOEQUALS"}}, {Env: []string{"1X=y"}},
		{WorkingDir: "relative"}, {User: "a b"},
	} {
		if err := validateProcessParams(bad); err == nil || !api.IsKind(err, api.KindInvalidArgument) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := validateProcessParams(api.VMCreateParams{Init: "image", Restart: "on-failure", Env: []string{"A=1"}, WorkingDir: "/srv", User: "1000:1000"}); err != nil {
		t.Error(err)
	}
}
