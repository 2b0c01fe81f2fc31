// Package fleet is the registry of relay nodes that share one store: each
// node registers itself and beats (Registry), and each issuer keeps a view
// of the fleet and picks the relays a credential lists (View). Nodes talk
// to each other only through the store (store.NodeStore): a drain is a row
// update that bumps the fleet version, a dead node is one whose heartbeat
// is three intervals old.
package fleet

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/traverse/traverse/store"
)

// DownAfter is how many heartbeat intervals of silence make a node down.
const DownAfter = 3

// Status is a node's state as a reader sees it: the stored state, or down.
type Status string

// Statuses, the label values of traverse_fleet_nodes.
const (
	StatusServing  Status = "serving"
	StatusDraining Status = "draining"
	StatusDown     Status = "down"
)

var statuses = []Status{StatusServing, StatusDraining, StatusDown}

// StatusOf is n's status at now: down when its last heartbeat is more than
// DownAfter intervals old, else its stored state.
func StatusOf(n *store.Node, heartbeat time.Duration, now time.Time) Status {
	if now.Sub(n.LastHeartbeat) > DownAfter*heartbeat {
		return StatusDown
	}
	if n.State == store.NodeDraining {
		return StatusDraining
	}
	return StatusServing
}

// NodeIDFile is the file in data_dir that keeps a node's ID across restarts.
const NodeIDFile = "node-id"

// LoadOrCreateID returns the node ID kept in dataDir, creating one (the
// host name and 8 random hex digits) on first start.
func LoadOrCreateID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, NodeIDFile)
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if !ValidID(id) {
			return "", fmt.Errorf("fleet: %s holds no valid node id", path)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("fleet: %w", err)
	}
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range strings.ToLower(host) {
		if b.Len() >= 32 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		b.WriteString("node")
	}
	rnd := make([]byte, 4)
	if _, err := rand.Read(rnd); err != nil {
		return "", err
	}
	id := b.String() + "-" + hex.EncodeToString(rnd)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	// O_EXCL: of two processes starting on one data_dir, the second reads
	// the first one's ID.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return LoadOrCreateID(dataDir)
	}
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(id + "\n"); err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	return id, nil
}

// ValidID reports whether id can name a node: 1 to 64 characters of
// lowercase letters, digits and "-".
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// Fingerprints identify TURN REST secrets without revealing them: the first
// 8 bytes of HMAC-SHA256 keyed with the store's encryption key (shared by
// every node of a fleet and absent from the database), so a reader of the
// nodes table cannot test guesses of a secret. Same order as secrets.
func Fingerprints(storeKey []byte, secrets []string) []string {
	out := make([]string, len(secrets))
	for i, s := range secrets {
		m := hmac.New(sha256.New, storeKey)
		m.Write([]byte("traverse secret fingerprint\x00"))
		m.Write([]byte(s))
		out[i] = hex.EncodeToString(m.Sum(nil)[:8])
	}
	return out
}
