package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the traverse command line with a config whose data_dir is dir.
func runCLI(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cfg := filepath.Join(dir, "traverse.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"-c", cfg}, args...))
	err := root.Execute()
	return out.String(), err
}

// runJSON runs a command with --json and decodes its single JSON object.
func runJSON(t *testing.T, dir string, args ...string) map[string]any {
	t.Helper()
	out, err := runCLI(t, dir, append(args, "--json")...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	if dec.More() {
		t.Fatalf("%v printed more than one JSON object:\n%s", args, out)
	}
	return v
}

func TestAccountsAndKeysCLI(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCLI(t, dir, "keys", "create"); err == nil || !strings.Contains(err.Error(), "no account yet") {
		t.Fatalf("keys create on an empty store: %v", err)
	}
	a := runJSON(t, dir, "accounts", "create", "--friendly-name", "main")
	sid, token := a["sid"].(string), a["auth_token"].(string)
	if !strings.HasPrefix(sid, "AC") || len(sid) != 34 || len(token) != 32 || a["status"] != "active" {
		t.Fatalf("created %v", a)
	}
	sub := runJSON(t, dir, "accounts", "create", "--parent", sid)
	if sub["owner_account_sid"] != sid {
		t.Fatalf("subaccount %v", sub)
	}
	list := runJSON(t, dir, "accounts", "list")
	if accts := list["accounts"].([]any); len(accts) != 2 {
		t.Fatalf("list %v", list)
	}
	if strings.Contains(mustRun(t, dir, "accounts", "list", "--json"), token) {
		t.Fatal("accounts list shows an auth token")
	}
	if s := runJSON(t, dir, "accounts", "show", sid); s["auth_token"] != nil {
		t.Fatal("show without --show-token prints the token")
	}
	if s := runJSON(t, dir, "accounts", "show", sid, "--show-token"); s["auth_token"] != token {
		t.Fatalf("show --show-token: %v", s)
	}
	if s := runJSON(t, dir, "accounts", "suspend", sid); s["status"] != "suspended" {
		t.Fatalf("suspend: %v", s)
	}
	if s := runJSON(t, dir, "accounts", "activate", sid); s["status"] != "active" {
		t.Fatalf("activate: %v", s)
	}
	rotated := runJSON(t, dir, "accounts", "rotate-token", sid)
	if rotated["auth_token"] == token || len(rotated["auth_token"].(string)) != 32 {
		t.Fatalf("rotate-token: %v", rotated)
	}

	k := runJSON(t, dir, "keys", "create", "--friendly-name", "ci")
	if k["account_sid"] != sid || len(k["secret"].(string)) != 32 || !strings.HasPrefix(k["sid"].(string), "SK") {
		t.Fatalf("keys create: %v", k)
	}
	subKey := runJSON(t, dir, "keys", "create", "--account", sub["sid"].(string))
	if subKey["account_sid"] != sub["sid"] {
		t.Fatalf("keys create --account: %v", subKey)
	}
	keys := runJSON(t, dir, "keys", "list")
	if l := keys["keys"].([]any); len(l) != 1 || l[0].(map[string]any)["secret"] != nil {
		t.Fatalf("keys list: %v", keys)
	}
	if d := runJSON(t, dir, "keys", "delete", k["sid"].(string)); d["deleted"] != true {
		t.Fatalf("keys delete: %v", d)
	}
	if l := runJSON(t, dir, "keys", "list")["keys"].([]any); len(l) != 0 {
		t.Fatalf("key still listed after delete: %v", l)
	}
	if _, err := runCLI(t, dir, "keys", "delete", k["sid"].(string)); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := runCLI(t, dir, "accounts", "show", "AC00000000000000000000000000000000"); err == nil {
		t.Fatal("show of an unknown account succeeded")
	}
	// Text output works too.
	if out := mustRun(t, dir, "accounts", "list"); !strings.Contains(out, sid) || !strings.Contains(out, "STATUS") {
		t.Fatalf("text list:\n%s", out)
	}
}

func mustRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := runCLI(t, dir, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}
