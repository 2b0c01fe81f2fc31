package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestDoctorCommandJSONAndExitCode: a failing check exits non-zero and
// --json prints every check with its status.
func TestDoctorCommandJSONAndExitCode(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "traverse.yaml")
	if err := os.WriteFile(cfg, []byte("relay:\n  ports: {min: 80, max: 90}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"doctor", "-c", cfg, "--json"})
	err := root.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("err = %v, want exit code 1", err)
	}
	var rep struct {
		Checks []struct{ Check, Status, Detail string } `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.Checks) != 1 || rep.Checks[0].Check != "config" || rep.Checks[0].Status != "FAIL" ||
		!bytes.Contains([]byte(rep.Checks[0].Detail), []byte("relay.ports.min")) {
		t.Fatalf("report %+v", rep)
	}
}
