package config

import (
	"os"
	"strings"
	"testing"
)

// TestExampleConfigValidates keeps the shipped example and the README's
// quick-start config from drifting away from the code.
func TestExampleConfigValidates(t *testing.T) {
	cfg, err := Load("../traverse.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("traverse.example.yaml: %v", err)
	}
}

func TestREADMEConfigValidates(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, part := range strings.Split(string(readme), "```yaml\n")[1:] {
		body, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatal("unterminated yaml block in README.md")
		}
		cfg := Default()
		if err := Decode([]byte(body), &cfg); err != nil {
			t.Fatalf("README yaml block %d: %v\n%s", blocks+1, err, body)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("README yaml block %d: %v\n%s", blocks+1, err, body)
		}
		blocks++
	}
	if blocks == 0 {
		t.Fatal("README.md has no yaml config block")
	}
}
