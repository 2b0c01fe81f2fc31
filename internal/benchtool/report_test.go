package main

import "testing"

// TestStealShare: the stolen share is the steal ticks' part of the ticks
// that passed between two readings of /proc/stat, and this machine's
// /proc/stat reads as some time passed.
func TestStealShare(t *testing.T) {
	if got := (machineTicks{total: 300, steal: 30}).stealPct(machineTicks{total: 100, steal: 10}); got != 10 {
		t.Errorf("20 of 200 ticks stolen: %.1f %%, want 10", got)
	}
	if got := (machineTicks{total: 100}).stealPct(machineTicks{total: 100}); got != 0 {
		t.Errorf("no time passed: %.1f %%, want 0", got)
	}
	if now := readMachineTicks(); now.total == 0 || now.steal > now.total {
		t.Errorf("/proc/stat read as %+v", now)
	}
}
