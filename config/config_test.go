package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func valid() Config {
	c := Default()
	c.Auth.Secrets = []string{"0123456789abcdef0123"}
	return c
}

func TestDefaultNeedsOnlyASecret(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("defaults plus a secret: %v", err)
	}
	err := Default().Validate()
	if err == nil || !strings.Contains(err.Error(), "auth.secrets") {
		t.Fatalf("defaults without a secret: err = %v, want auth.secrets", err)
	}
}

// TestValidateTable: each bad setting is reported with its dotted path.
func TestValidateTable(t *testing.T) {
	cases := []struct {
		name  string
		mod   func(*Config)
		paths []string
	}{
		{"short secret", func(c *Config) { c.Auth.Secrets = []string{"short"} }, []string{"auth.secrets[0]"}},
		{"no secret, issuer on", func(c *Config) { c.Auth.Secrets = nil; c.Auth.Users = []User{{"u", "password1"}} }, []string{"auth.secrets"}},
		{"bad max_ttl", func(c *Config) { c.Auth.MaxTTL = 0 }, []string{"auth.max_ttl"}},
		{"user with colon", func(c *Config) { c.Auth.Users = []User{{"a:b", "password1"}} }, []string{"auth.users[0].name"}},
		{"short user password", func(c *Config) { c.Auth.Users = []User{{"ab", "x"}} }, []string{"auth.users[0].password"}},
		{"public ip v6", func(c *Config) { c.Relay.PublicIP = "2001:db8::1" }, []string{"relay.public_ip"}},
		{"bind ip garbage", func(c *Config) { c.Relay.BindIP = "nope" }, []string{"relay.bind_ip"}},
		{"port range", func(c *Config) { c.Relay.Ports = PortRange{Min: 60000, Max: 50000} }, []string{"relay.ports"}},
		{"port too low", func(c *Config) { c.Relay.Ports.Min = 80 }, []string{"relay.ports.min"}},
		{"bad allow cidr", func(c *Config) { c.Relay.Peers.Allow = []string{"10.0.0.0/40"} }, []string{"relay.peers.allow[0]"}},
		{"bad deny cidr", func(c *Config) { c.Relay.Peers.Deny = []string{"ok", "1.2.3.4"} }, []string{"relay.peers.deny[0]"}},
		{"bad udp listen", func(c *Config) { c.Listen.UDP = []string{"3478"} }, []string{"listen.udp[0]"}},
		{"tls half", func(c *Config) { c.TLS.Cert = "a.pem" }, []string{"tls"}},
		{"acme and files", func(c *Config) { c.TLS.Cert, c.TLS.Key = "a", "b"; c.TLS.ACME.Domains = []string{"t.example.com"} }, []string{"tls.acme"}},
		{"acme ip domain", func(c *Config) { c.TLS.ACME.Domains = []string{"203.0.113.1"} }, []string{"tls.acme.domains[0]"}},
		{"acme bad ca", func(c *Config) { c.TLS.ACME.Domains = []string{"t.example.com"}; c.TLS.ACME.CA = "letsencrypt" }, []string{"tls.acme.ca"}},
		{"acme no tls listener", func(c *Config) { c.TLS.ACME.Domains = []string{"t.example.com"}; c.Listen.TLS = nil }, []string{"tls.acme"}},
		{"auto ip without stun", func(c *Config) { c.Relay.PublicIP = "auto"; c.Relay.PublicIPSTUN = nil }, []string{"relay.public_ip_stun"}},
		{"stun server without port", func(c *Config) { c.Relay.PublicIPSTUN = []string{"stun.example.com"} }, []string{"relay.public_ip_stun[0]"}},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, []string{"log.level"}},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, []string{"log.format"}},
		{"dsn", func(c *Config) { c.Store.DSN = "mysql://u:pw@h/db" }, []string{"store.dsn"}},
		{"encryption key", func(c *Config) { c.Store.EncryptionKey = "abc" }, []string{"store.encryption_key"}},
		{"ice server", func(c *Config) { c.Issuer.ICEServers = []string{"http://x"} }, []string{"issuer.ice_servers[0]"}},
		{"cors origin", func(c *Config) { c.Issuer.CORSOrigins = []string{"example.com"} }, []string{"issuer.cors_origins[0]"}},
		{"usage keys", func(c *Config) {
			c.Usage = Usage{FlushInterval: time.Millisecond, DefaultAccount: "ACnope", Region: "EU West", PricePerMegabyte: "-1",
				PriceUnit: "dollars", RevocationPoll: 0, MaxBufferedRows: 0}
		}, []string{"usage.flush_interval", "usage.default_account", "usage.region", "usage.price_per_megabyte",
			"usage.price_unit", "usage.revocation_poll", "usage.max_buffered_rows"}},
		{"usage price exponent", func(c *Config) { c.Usage.PricePerMegabyte = "1e-3" }, []string{"usage.price_per_megabyte"}},
		{"bandwidth", func(c *Config) { c.Relay.Quota.Bandwidth = 10 }, []string{"relay.quota.bandwidth"}},
		{"per account", func(c *Config) { c.Relay.Quota.PerAccount = -1 }, []string{"relay.quota.per_account"}},
		{"pending per ip", func(c *Config) { c.Relay.Limits.PendingPerIP = -1 }, []string{"relay.limits.pending_per_ip"}},
		{"token rate", func(c *Config) { c.Issuer.TokensPerSecond = -1 }, []string{"issuer.tokens_per_second"}},
		{"token burst", func(c *Config) { c.Issuer.TokensBurst = 0 }, []string{"issuer.tokens_burst"}},
		{"nothing enabled", func(c *Config) { c.Relay.Enabled = false; c.Issuer.Enabled = false }, []string{"relay.enabled"}},
		{"console session ttl", func(c *Config) { c.Console.SessionTTL = 10 * time.Second }, []string{"console.session_ttl"}},
		{"relays per token", func(c *Config) { c.Issuer.RelaysPerToken = 0 }, []string{"issuer.relays_per_token"}},
		{"region cidr", func(c *Config) { c.Issuer.RegionByCIDR = map[string]string{"10.0.0.0/33": "eu"} }, []string{"issuer.region_by_cidr.10.0.0.0/33"}},
		{"empty region", func(c *Config) { c.Issuer.RegionByCIDR = map[string]string{"10.0.0.0/8": ""} }, []string{"issuer.region_by_cidr.10.0.0.0/8"}},
		{"trusted proxy", func(c *Config) { c.Issuer.TrustedProxies = []string{"10.0.0.0/8", "proxy.local"} }, []string{"issuer.trusted_proxies[1]"}},
		{"node weight", func(c *Config) { c.Node.Weight = 0 }, []string{"node.weight"}},
		{"outage grace", func(c *Config) { c.Issuer.OutageGrace = -time.Second }, []string{"issuer.outage_grace"}},
		{"node heartbeat", func(c *Config) { c.Node.Heartbeat = time.Millisecond }, []string{"node.heartbeat"}},
		{"node public host", func(c *Config) { c.Node.PublicHost = "turn://x" }, []string{"node.public_host"}},
		{"several at once", func(c *Config) { c.Realm = ""; c.Relay.Quota.PerUser = -1; c.Metrics.Listen = "x" },
			[]string{"realm", "relay.quota.per_user", "metrics.listen"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mod(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("valid, want problems")
			}
			probs, ok := err.(Problems)
			if !ok {
				t.Fatalf("error %T, want Problems", err)
			}
			for _, p := range tc.paths {
				found := false
				for _, line := range probs {
					if strings.HasPrefix(line, p+":") {
						found = true
					}
				}
				if !found {
					t.Errorf("no problem for %s in %v", p, probs)
				}
			}
		})
	}
}

func TestDSNPasswordNotShown(t *testing.T) {
	c := valid()
	c.Store.DSN = "mysql://user:hunter2@db/x"
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("realm: x\nrelay:\n  publc_ip: 1.2.3.4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "publc_ip") {
		t.Fatalf("err = %v, want the unknown key named", err)
	}
}

func TestLoadYAMLAndEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "auth:\n  secrets: [from-file-0123456789]\n  max_ttl: 2h\nrelay:\n  ports: {min: 50000, max: 50100}\n"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.MaxTTL != 2*time.Hour || c.Relay.Ports.Min != 50000 || c.Auth.Secrets[0] != "from-file-0123456789" {
		t.Fatalf("loaded %+v", c)
	}
	if c.Realm != "traverse" {
		t.Fatalf("unset key lost its default: realm %q", c.Realm)
	}
	t.Setenv(EnvSecrets, "env-secret-0123456789, second-secret-0123456")
	c, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Auth.Secrets) != 2 || c.Auth.Secrets[0] != "env-secret-0123456789" {
		t.Fatalf("env secrets: %v", c.Auth.Secrets)
	}
}

func TestLoadEmptyFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Realm != "traverse" {
		t.Fatalf("%v %v", c.Realm, err)
	}
}

// TestDataDirFromEnvironment: $TRAVERSE_DATA_DIR is the default data_dir
// (the container image and the systemd unit set it); the file still wins.
func TestDataDirFromEnvironment(t *testing.T) {
	t.Setenv(EnvDataDir, "/var/lib/traverse")
	cfg, err := Load("")
	if err != nil || cfg.DataDir != "/var/lib/traverse" {
		t.Fatalf("data_dir = %q, %v", cfg.DataDir, err)
	}
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("data_dir: /srv/traverse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = Load(path); err != nil || cfg.DataDir != "/srv/traverse" {
		t.Fatalf("data_dir = %q, %v", cfg.DataDir, err)
	}
}
