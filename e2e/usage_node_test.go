package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestTwilioNodeUsageRecords: twilio-node (e2e/node, installed by
// scripts/test with npm ci) reads usage.records.list and
// usage.records.daily.list from traverse unchanged, following next_page_uri
// page by page, after a known number of bytes crossed the relay.
func TestTwilioNodeUsageRecords(t *testing.T) {
	if _, err := os.Stat(filepath.Join("node", "node_modules", "twilio")); err != nil {
		t.Fatalf("twilio-node is not installed: run (cd e2e/node && npm ci), as scripts/test does (%v)", err)
	}
	in := Start(t, Options{Extra: "usage:\n  flush_interval: 200ms\n"})
	_, _, rc := allocateWith(t, in, in.UDP)
	pingPong(t, rc, FreeUDPPeer(t).LocalAddr(), 30, 1200)
	api := twilioAt(t, in.Issuer, in.AccountSid, in.AuthToken, in.AccountSid)
	// 30 datagrams of 1200 bytes each way: 72000 bytes.
	eventually(t, 10*time.Second, "usage flushed", func() bool { return turnUsage(t, api) == "0.072" })

	today := time.Now().UTC()
	start := today.AddDate(0, 0, -2).Format("2006-01-02")
	cmd := exec.Command("node", "usage.js")
	cmd.Dir = "node"
	cmd.Env = append(os.Environ(), "TRAVERSE_ISSUER="+in.Issuer, "ACCOUNT_SID="+in.AccountSid, "AUTH_TOKEN="+in.AuthToken,
		"START_DATE="+start, "END_DATE="+today.Format("2006-01-02"), "TWILIO_EDGE=", "TWILIO_REGION=")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node usage.js: %v\n%s", err, stderr)
	}
	type record struct {
		AccountSid, Category, Usage, UsageUnit, Count, StartDate string
		Price                                                    any
	}
	var got struct{ Records, Daily []record }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %s: %v", out, err)
	}
	if len(got.Records) != 1 || got.Records[0].Usage != "0.072" || got.Records[0].Category != "turnmegabytes" ||
		got.Records[0].AccountSid != in.AccountSid || got.Records[0].UsageUnit != "megabytes" {
		t.Fatalf("usage.records.list = %+v, want one turnmegabytes record of 0.072", got.Records)
	}
	// Three days, one per page; today's holds the bytes.
	if len(got.Daily) != 3 || got.Daily[2].Usage != "0.072" || got.Daily[0].Usage != "0" {
		t.Fatalf("usage.records.daily.list over three pages = %+v", got.Daily)
	}
}
