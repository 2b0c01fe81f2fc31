// Command traverse is a self-hosted, Twilio-compatible Network Traversal
// Service: a STUN/TURN relay and an HTTP issuer of short-lived TURN
// credentials in one binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "traverse:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "traverse",
		Short:         "Self-hosted, Twilio-compatible STUN/TURN relay and credential issuer",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringP("config", "c", "", "config file (YAML); default $"+config.EnvConfig)
	root.AddCommand(newServeCmd(), newValidateCmd(), newCredentialsCmd(), newVersionCmd(),
		newAccountsCmd(), newKeysCmd(), newTokenCmd(), newDoctorCmd(), newNodesCmd(), newSessionsCmd())
	return root
}

// configPath is -c, else $TRAVERSE_CONFIG.
func configPath(cmd *cobra.Command) string {
	if p, _ := cmd.Flags().GetString("config"); p != "" {
		return p
	}
	return os.Getenv(config.EnvConfig)
}

// loadConfig loads and validates the configuration; problems exit with 2.
// dev applies --dev (see applyDev).
func loadConfig(cmd *cobra.Command, dev bool) (config.Config, error) {
	cfg, _, err := loadServeConfig(cmd, dev, false)
	return cfg, err
}

// loadServeConfig is loadConfig for serve and its reloads: without --dev it
// also adds the default IPv6 listeners when the host has IPv6 (see
// applyIPv6Default), and returns the note that says what it decided.
func loadServeConfig(cmd *cobra.Command, dev, serving bool) (config.Config, string, error) {
	path := configPath(cmd)
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, "", &exitError{2, err}
	}
	var note string
	if dev || serving {
		named, err := readNamedListeners(path)
		if err != nil {
			return cfg, "", &exitError{2, err}
		}
		if dev {
			if err := applyDev(&cfg, named, hasIPv6Loopback(), cmd.ErrOrStderr()); err != nil {
				return cfg, "", err
			}
		} else {
			note = applyIPv6Default(&cfg, named, hostAddrs())
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", &exitError{2, err}
	}
	return cfg, note, nil
}

func newServeCmd() *cobra.Command {
	var dev bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay and the issuer",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, note, err := loadServeConfig(cmd, dev, true)
			if err != nil {
				return err
			}
			return serve(cmd, cfg, note, dev)
		},
	}
	cmd.Flags().BoolVar(&dev, "dev", false, "local trial: create a secret and a self-signed certificate in data_dir, listen on loopback, allow loopback peers")
	return cmd
}

// serve runs the server until a signal stops it. note is loadServeConfig's
// start-up note about the IPv6 listeners.
func serve(cmd *cobra.Command, cfg config.Config, note string, dev bool) error {
	log, level, err := newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if note != "" {
		log.Info(note)
	}
	if stop, err := cpuProfile(os.Getenv("TRAVERSE_CPU_PROFILE")); err != nil {
		return err
	} else if stop != nil {
		defer stop()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, server.Options{Config: cfg, Log: log, Level: &level})
	if err != nil {
		return err
	}
	if err := printFirstStart(ctx, cmd.OutOrStdout(), isTerminal(cmd.OutOrStdout()), srv, cfg, dev); err != nil {
		srv.Shutdown(ctx)
		return err
	}
	if u := srv.ConsoleURL(); dev && u != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "dev: operator console at %s (sign in with the account SID and auth token)\n", u)
	}

	// SIGTERM/SIGINT: drain then stop; a second one exits at once.
	// SIGHUP: reload, keeping the running config when the new one is bad.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		stopping := false
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				reload(cmd, srv, log, dev)
				continue
			}
			if stopping {
				log.Warn("second signal: exiting now")
				_ = log.Sync()
				os.Exit(1)
			}
			stopping = true
			log.Info("signal received: draining", zap.Stringer("signal", sig))
			cancel()
		}
	}()
	return srv.Serve(ctx)
}

func reload(cmd *cobra.Command, srv *server.Server, log *zap.Logger, dev bool) {
	cfg, _, err := loadServeConfig(cmd, dev, true)
	if err == nil {
		_, err = srv.Reload(cfg)
	}
	if err != nil {
		log.Error("reload failed: keeping the running config", zap.Error(err))
	}
}

// newLogger builds zap from log.level and log.format; the level can change
// on reload.
func newLogger(l config.Log) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(l.Level)
	if err != nil {
		return nil, level, err
	}
	zc := zap.NewProductionConfig()
	if l.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
	}
	zc.Level = level
	zc.Sampling = nil
	log, err := zc.Build()
	return log, level, err
}

func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check a config file without serving",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := loadConfig(cmd, false); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "config ok")
			return nil
		},
	}
}

func newCredentialsCmd() *cobra.Command {
	var (
		ttl  time.Duration
		user string
	)
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Mint TURN REST credentials from the configured secret (JSON)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, false)
			if err != nil {
				return err
			}
			if ttl > cfg.Auth.MaxTTL {
				return &exitError{2, fmt.Errorf("--ttl %s is above auth.max_ttl %s: the relay would refuse it", ttl, cfg.Auth.MaxTTL)}
			}
			cred, err := auth.NewSecrets(cfg.Auth.Secrets).Mint(user, ttl, time.Now())
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{
				"username": cred.Username,
				"password": cred.Password,
				"ttl":      int64(ttl / time.Second),
				"uris":     server.ConfigURIs(cfg),
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime of the credential")
	cmd.Flags().StringVar(&user, "user", "", "user name put after the expiry")
	cmd.Flags().Bool("json", true, "print JSON (always on; accepted for symmetry)")
	return cmd
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = s.Value
					}
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version, "revision": rev, "go": runtime.Version()})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "traverse %s %s %s\n", version, rev, runtime.Version())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// cpuProfile profiles the process until the returned stop is called (at the
// end of serve), when TRAVERSE_CPU_PROFILE names a file: how scripts/pgo
// collects cmd/traverse/default.pgo from a benchmark run.
func cpuProfile(path string) (stop func(), err error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("TRAVERSE_CPU_PROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("TRAVERSE_CPU_PROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}
