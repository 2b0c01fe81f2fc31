// Package doctor is the checklist `traverse doctor` runs on the VM: the
// config, the listener ports, the certificate, the peer policy, the relay
// port range against the kernel's ephemeral range, the descriptor limit, and
// STUN plus a full TURN relay round trip against the running server on each
// configured transport. Each check ends OK, WARN or FAIL.
package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/traverse/traverse/config"
)

// Status is a check's outcome.
type Status string

// The outcomes, from good to bad.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Report is every check, in order.
type Report struct {
	Checks []Check `json:"checks"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == Fail {
			return true
		}
	}
	return false
}

// WriteText prints one line per check.
func (r Report) WriteText(w io.Writer) {
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-4s  %-22s %s\n", c.Status, c.Name, c.Detail)
	}
}

// WriteJSON prints the report as one JSON object.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Options adjust the checks.
type Options struct {
	// Timeout bounds each network check. Default 5s.
	Timeout time.Duration
	// Now is the clock for certificate lifetimes; nil means time.Now.
	Now func() time.Time
	// LocalPortRange is the file holding the kernel's ephemeral port range.
	// Default /proc/sys/net/ipv4/ip_local_port_range.
	LocalPortRange string
}

func (r *Report) add(name string, st Status, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Status: st, Detail: fmt.Sprintf(format, args...)})
}

// Run checks the config at path and the server it describes. A config that
// does not load or validate is the only check reported.
func Run(ctx context.Context, path string, opts Options) Report {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LocalPortRange == "" {
		opts.LocalPortRange = "/proc/sys/net/ipv4/ip_local_port_range"
	}
	var r Report
	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		r.add("config", Fail, "%v", err)
		return r
	}
	r.add("config", OK, "%s is valid", path)
	checkListeners(&r, cfg, opts)
	checkCertificate(&r, cfg, opts)
	checkPeers(&r, cfg)
	checkPortRange(&r, cfg, opts)
	checkFDLimit(&r, cfg)
	checkRelay(ctx, &r, cfg, opts)
	return r
}
