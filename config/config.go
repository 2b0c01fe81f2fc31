// Package config holds traverse's configuration: one struct, its defaults in
// Default, Load (YAML with unknown keys rejected, then environment), and a pure
// Validate that reports every problem at once with its dotted path.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvConfig names the environment variable that points at the config file.
const EnvConfig = "TRAVERSE_CONFIG"

// EnvDataDir, when set, replaces the default data_dir (a data_dir in the
// file still wins): the systemd unit and the container image point it at
// /var/lib/traverse.
const EnvDataDir = "TRAVERSE_DATA_DIR"

// EnvSecrets, when set, replaces auth.secrets with a comma-separated list, so a
// secret can come from a container's environment instead of a file.
const EnvSecrets = "TRAVERSE_AUTH_SECRETS"

// Config is the whole of traverse's configuration. Key names are the public
// contract documented in the README.
type Config struct {
	// Realm is the TURN realm sent in 401 responses. Default "traverse".
	Realm string `yaml:"realm"`
	// DataDir holds the embedded database, its encryption key and, with --dev,
	// the generated secret and self-signed certificate. Default "./traverse-data",
	// or $TRAVERSE_DATA_DIR when set.
	DataDir string `yaml:"data_dir"`

	Listen  Listen  `yaml:"listen"`
	TLS     TLS     `yaml:"tls"`
	Auth    Auth    `yaml:"auth"`
	Relay   Relay   `yaml:"relay"`
	Issuer  Issuer  `yaml:"issuer"`
	Store   Store   `yaml:"store"`
	Node    Node    `yaml:"node"`
	Log     Log     `yaml:"log"`
	Metrics Metrics `yaml:"metrics"`
	Console Console `yaml:"console"`
	Usage   Usage   `yaml:"usage"`
}

// Listen lists the TURN listeners, each a "host:port" (IPv6 as "[::]:3478").
type Listen struct {
	// UDP listeners. Default ["0.0.0.0:3478"]. Each gets one socket per core.
	UDP []string `yaml:"udp"`
	// TCP listeners (plain TURN over TCP). Default ["0.0.0.0:3478"].
	TCP []string `yaml:"tcp"`
	// TLS listeners; each also accepts plain TURN over TCP, told apart by the
	// first byte. Off unless tls.cert and tls.key are set.
	// Default ["0.0.0.0:443", "0.0.0.0:5349"].
	TLS []string `yaml:"tls"`
}

// TLS names the certificate for TURN over TLS and for the issuer's HTTPS:
// PEM files (reloaded when they change on disk) or ACME.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ACME obtains and renews the certificate automatically. Used when
	// acme.domains is set; cert/key must then be empty.
	ACME ACME `yaml:"acme"`
}

// Enabled reports whether a certificate is configured (files or ACME).
func (t TLS) Enabled() bool { return (t.Cert != "" && t.Key != "") || t.ACME.Enabled() }

// ACME configures automatic certificates (Let's Encrypt or any ACME CA).
type ACME struct {
	// Domains are the names on the certificate; the first is served to
	// clients that send no SNI. Empty turns ACME off.
	Domains []string `yaml:"domains"`
	// Email is the ACME account contact. Optional.
	Email string `yaml:"email"`
	// CA is the ACME directory URL. Default Let's Encrypt production.
	CA string `yaml:"ca"`
	// CARoots is a PEM file of roots to trust for the CA's directory (a
	// private CA such as step-ca or Pebble). Default: the system roots.
	CARoots string `yaml:"ca_roots"`
	// Storage is the directory for account keys, certificates and locks.
	// Default "<data_dir>/acme". Nodes sharing it order each certificate once.
	Storage string `yaml:"storage"`
	// HTTPPort, when set, also answers HTTP-01 on this port (80 usually).
	// Default 0: TLS-ALPN-01 only, on the TURN TLS listener.
	HTTPPort int `yaml:"http_port"`
}

// Enabled reports whether ACME is configured.
func (a ACME) Enabled() bool { return len(a.Domains) > 0 }

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// PublicIPAuto asks relay.public_ip_stun for the relay's public address.
const PublicIPAuto = "auto"

// Auth configures TURN authentication.
type Auth struct {
	// Secrets are TURN REST shared secrets: the first mints, every one
	// verifies, so a secret can be rotated without downtime. At least 16
	// characters each.
	Secrets []string `yaml:"secrets"`
	// MaxTTL is the furthest in the future a credential's expiry may lie.
	// Default 24h.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// ClockSkew is tolerated between the minting clock and ours. Default 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// StrictExpiry tears an allocation down when its credential expires.
	// Default false: expiry is checked when the allocation is created, as
	// coturn and eturnal do.
	StrictExpiry bool `yaml:"strict_expiry"`
	// Users are static long-term users, as coturn's user=NAME:PASSWORD.
	Users []User `yaml:"users"`
}

// User is a static TURN user.
type User struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
}

// Relay configures the TURN relay.
type Relay struct {
	// Enabled runs the relay in this process. Default true.
	Enabled bool `yaml:"enabled"`
	// PublicIP is advertised in XOR-RELAYED-ADDRESS (the VM's public IPv4
	// behind 1:1 NAT). Default: bind_ip when it is specific, else the first
	// global IPv4 of the host. "auto" asks the public_ip_stun servers at
	// start-up and on SIGHUP.
	PublicIP string `yaml:"public_ip"`
	// PublicIPSTUN are the STUN servers ("host:port") asked when public_ip is
	// "auto"; they must all agree. Default stun.l.google.com:19302 and
	// stun.cloudflare.com:3478.
	PublicIPSTUN []string `yaml:"public_ip_stun"`
	// BindIP is where relay sockets are bound. Default "0.0.0.0".
	BindIP string `yaml:"bind_ip"`
	// Ports is the relay port range. Default 49152-65535.
	Ports PortRange `yaml:"ports"`
	// Peers is the peer policy: which addresses the relay may send to.
	Peers Peers `yaml:"peers"`
	// Quota limits allocations and bandwidth.
	Quota Quota `yaml:"quota"`
	// DrainTimeout is how long SIGTERM waits for allocations to end before
	// closing. Default 10s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// UDPSockets is the number of SO_REUSEPORT sockets per UDP listener.
	// Default 0: one per core.
	UDPSockets int `yaml:"udp_sockets"`
	// AdaptiveProcs runs the whole process on one processor (GOMAXPROCS=1)
	// from the start and after 2 s under 0.5 of a core, and on all of them
	// once it uses 0.6: at light load a multi-processor Go runtime spends
	// as much CPU waking threads as relaying. Off when the GOMAXPROCS
	// environment variable is set. Default true.
	AdaptiveProcs bool `yaml:"adaptive_procs"`
	// Limits bound unauthenticated work per source.
	Limits Limits `yaml:"limits"`
}

// Limits bound what a client may hold before it has authenticated.
type Limits struct {
	// PendingPerIP is the number of TCP/TLS connections one source IP (an
	// IPv6 /64) may hold open before they allocate; connections that have
	// allocated count only against the quotas. Sized for an office behind
	// one NAT. 0 means unlimited. Default 256.
	PendingPerIP int `yaml:"pending_per_ip"`
}

// PortRange is an inclusive range of UDP ports.
type PortRange struct {
	Min int `yaml:"min"`
	Max int `yaml:"max"`
}

// Peers is the relay's peer policy. Private, loopback, link-local,
// documentation and multicast ranges are denied unless allowed here.
type Peers struct {
	// Allow opens CIDRs (or single IPs) that the built-in deny list covers.
	Allow []string `yaml:"allow"`
	// Deny adds CIDRs (or single IPs) to the deny list.
	Deny []string `yaml:"deny"`
	// AllowLoopback permits 127.0.0.0/8 and ::1 as peers: for tests and
	// local trials only.
	AllowLoopback bool `yaml:"allow_loopback"`
}

// Quota limits what users may hold.
type Quota struct {
	// PerUser is the number of concurrent allocations per user (the part of
	// a TURN REST username after the expiry). 0 means unlimited. Default 10.
	PerUser int `yaml:"per_user"`
	// PerAccount is the number of concurrent allocations per AccountSid,
	// across all the credentials the issuer minted for it. 0 means
	// unlimited. Default 0.
	PerAccount int `yaml:"per_account"`
	// Total is the number of concurrent allocations on this server. 0 means
	// unlimited. Default 0.
	Total int `yaml:"total"`
	// Bandwidth caps each allocation, in bytes per second each way. 0 means
	// no cap. Default 0.
	Bandwidth int64 `yaml:"bandwidth"`
}

// Issuer configures the HTTP credential issuer.
type Issuer struct {
	// Enabled runs the issuer in this process. Default true.
	Enabled bool `yaml:"enabled"`
	// Listen is the issuer's HTTP address; HTTPS when tls.cert/key are set.
	// Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// PublicHost is the host put in the ICE server URIs. Default: relay.public_ip.
	PublicHost string `yaml:"public_host"`
	// ICEServers, when set, replaces the URIs derived from the listeners.
	ICEServers []string `yaml:"ice_servers"`
	// CORSOrigins may call the client-side ICE-servers endpoint from a
	// browser. Default none.
	CORSOrigins []string `yaml:"cors_origins"`
	// TokensPerSecond is how many credentials one account (a subaccount on
	// its own) may mint a second, over the Tokens resource and
	// /v1/ice-servers together; beyond it and its burst the answer is 429
	// (code 20429). 0 means unlimited. Default 10.
	TokensPerSecond float64 `yaml:"tokens_per_second"`
	// TokensBurst is how many credentials an account may mint at once
	// before TokensPerSecond applies. Default 100.
	TokensBurst int `yaml:"tokens_burst"`
	// RelaysPerToken is how many serving fleet nodes a credential lists
	// (each with its own URIs). Default 1.
	RelaysPerToken int `yaml:"relays_per_token"`
	// RegionByCIDR maps client CIDRs (or single IPs) to a node.region, so a
	// client gets relays of its region; the longest matching prefix wins.
	// Default none: the issuer's own node.region.
	RegionByCIDR map[string]string `yaml:"region_by_cidr"`
	// TrustedProxies are CIDRs (or single IPs) of reverse proxies whose
	// X-Forwarded-For or Forwarded header names the client. Default none:
	// the header is ignored and the TCP peer is the client.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// OutageGrace lets the issuer keep authenticating while the store is
	// unreachable: accounts and API keys it read successfully within this
	// long still authenticate (a row the store said was gone never does).
	// Default 0: off, every authentication needs the store.
	OutageGrace time.Duration `yaml:"outage_grace"`
}

// Node describes this process as a member of a fleet of relays sharing
// store.dsn (see package fleet).
type Node struct {
	// PublicHost is the host in this node's ICE URIs. Default: the relay's
	// advertised IP (relay.public_ip).
	PublicHost string `yaml:"public_host"`
	// Region is free text such as "eu-west", matched by issuer.region_by_cidr.
	// Default "" (no region).
	Region string `yaml:"region"`
	// Weight is this node's share of new credentials relative to the other
	// nodes, 1..1000. Default 1.
	Weight int `yaml:"weight"`
	// Heartbeat is how often the node refreshes its row in the store; a
	// node silent for three heartbeats is down. Default 5s.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// Store configures where accounts and API keys live.
type Store struct {
	// DSN is "sqlite:PATH" or a "postgres://" URL. Default
	// "sqlite:<data_dir>/traverse.db".
	DSN string `yaml:"dsn"`
	// EncryptionKey (64 hex characters) encrypts secrets at rest. Default: a
	// key file "<data_dir>/store.key" created with mode 0600 on first start.
	EncryptionKey string `yaml:"encryption_key"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json or console. Default console.
	Format string `yaml:"format"`
}

// Metrics configures the Prometheus, /healthz and /readyz listener.
type Metrics struct {
	// Listen is the metrics address; empty turns it off. Default "127.0.0.1:9641".
	Listen string `yaml:"listen"`
}

// Console configures the operator console served at /console/ on the
// issuer's listener (it needs the issuer).
type Console struct {
	// Enabled serves the console. Default true.
	Enabled bool `yaml:"enabled"`
	// SessionTTL is how long a console sign-in lasts without a request; each
	// request renews it, up to 12 hours after sign-in. Default 15m.
	SessionTTL time.Duration `yaml:"session_ttl"`
}

// Usage configures usage metering and live control (package usage). They
// run whenever the process has a store: with the issuer, or with
// store.dsn set on a relay-only node.
type Usage struct {
	// FlushInterval is how often usage is written to the store (and the
	// live allocation list published). A SIGKILL loses at most one
	// interval. Default 10s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// DefaultAccount (an AccountSid) is billed for static users and
	// `traverse credentials` users, whose usernames name no account.
	// Default none: their traffic is not billed.
	DefaultAccount string `yaml:"default_account"`
	// Region, when set, adds the category turnmegabytes-<region> for this
	// node's traffic. Default none.
	Region string `yaml:"region"`
	// Node names this node in the sessions list; nodes sharing a store need
	// distinct names. Default: "<host name>-<pid>".
	Node string `yaml:"node"`
	// PricePerMegabyte is the decimal price of one megabyte in the Usage
	// Records' price field. Default "0".
	PricePerMegabyte string `yaml:"price_per_megabyte"`
	// PriceUnit is the ISO 4217 currency of prices. Default "usd".
	PriceUnit string `yaml:"price_unit"`
	// RevocationPoll is the periodic re-read of revocations, the safety net
	// behind PostgreSQL's NOTIFY. Default 5s.
	RevocationPoll time.Duration `yaml:"revocation_poll"`
	// MaxBufferedRows bounds the usage rows (account and hour) kept in
	// memory while the store is unreachable. Default 100000.
	MaxBufferedRows int `yaml:"max_buffered_rows"`
}

// Default returns the configuration traverse runs with when a key is not set.
func Default() Config {
	return Config{
		Realm:   "traverse",
		DataDir: "./traverse-data",
		Listen: Listen{
			UDP: []string{"0.0.0.0:3478"},
			TCP: []string{"0.0.0.0:3478"},
			TLS: []string{"0.0.0.0:443", "0.0.0.0:5349"},
		},
		TLS: TLS{ACME: ACME{CA: LetsEncrypt}},
		Auth: Auth{
			MaxTTL:    24 * time.Hour,
			ClockSkew: 30 * time.Second,
		},
		Relay: Relay{
			Enabled:       true,
			BindIP:        "0.0.0.0",
			PublicIPSTUN:  []string{"stun.l.google.com:19302", "stun.cloudflare.com:3478"},
			Ports:         PortRange{Min: 49152, Max: 65535},
			Quota:         Quota{PerUser: 10},
			DrainTimeout:  10 * time.Second,
			AdaptiveProcs: true,
			Limits:        Limits{PendingPerIP: 256},
		},
		Issuer: Issuer{
			Enabled:         true,
			Listen:          "127.0.0.1:8080",
			TokensPerSecond: 10,
			TokensBurst:     100,
			RelaysPerToken:  1,
		},
		Node:    Node{Weight: 1, Heartbeat: 5 * time.Second},
		Log:     Log{Level: "info", Format: "console"},
		Metrics: Metrics{Listen: "127.0.0.1:9641"},
		Console: Console{Enabled: true, SessionTTL: 15 * time.Minute},
		Usage: Usage{
			FlushInterval:    10 * time.Second,
			PricePerMegabyte: "0",
			PriceUnit:        "usd",
			RevocationPoll:   5 * time.Second,
			MaxBufferedRows:  100000,
		},
	}
}

// Load reads the YAML file at path over Default (unknown keys are an error),
// then applies the environment. An empty path means defaults only. It does not
// validate: call Validate.
func Load(path string) (Config, error) {
	cfg := Default()
	if v := os.Getenv(EnvDataDir); v != "" {
		cfg.DataDir = v
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		if err := Decode(data, &cfg); err != nil {
			return cfg, fmt.Errorf("%s: %w", path, err)
		}
	}
	if v, ok := os.LookupEnv(EnvSecrets); ok && v != "" {
		cfg.Auth.Secrets = splitList(v)
	}
	return cfg, nil
}

// Decode decodes YAML into cfg, rejecting unknown keys.
func Decode(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is io.EOF: it means "all defaults".
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
