package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCPUProfile: TRAVERSE_CPU_PROFILE unset profiles nothing; set, it
// writes a profile when stopped; an unwritable path is an error, not a
// silent no-op.
func TestCPUProfile(t *testing.T) {
	if stop, err := cpuProfile(""); stop != nil || err != nil {
		t.Fatalf("cpuProfile(\"\") = %v, %v; want nothing", stop != nil, err)
	}
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop, err := cpuProfile(path)
	if err != nil || stop == nil {
		t.Fatalf("cpuProfile: %v", err)
	}
	for i := 0; i < 1e6; i++ {
		_ = filepath.Base(path)
	}
	stop()
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("profile not written: %v", err)
	}
	if _, err := cpuProfile(filepath.Join(t.TempDir(), "missing", "cpu.pprof")); err == nil {
		t.Fatal("an unwritable profile path was accepted")
	}
}
