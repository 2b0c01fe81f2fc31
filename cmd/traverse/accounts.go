package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/config"
	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
	_ "github.com/traverse/traverse/store/postgres" // the shared store for several nodes
	_ "github.com/traverse/traverse/store/sqlite"   // the embedded default store
)

// withIssuer opens the store named by the loaded config (-c/--config or
// $TRAVERSE_CONFIG: data_dir, store.dsn, store.encryption_key) and runs fn on
// an issuer service over it. Only the store keys matter here, so the rest of
// the config is not validated: these commands work before secrets are set.
func withIssuer(cmd *cobra.Command, fn func(ctx context.Context, svc *issuer.Service) error) error {
	return withStore(cmd, func(ctx context.Context, cfg config.Config, st store.Store) error {
		svc, err := issuer.New(issuer.Options{Store: st, MaxTTL: cfg.Auth.MaxTTL,
			Usage: issuer.UsageOptions{LiveWithin: issuer.LiveWithin(cfg.Usage.FlushInterval)}})
		if err != nil {
			return err
		}
		return fn(ctx, svc)
	})
}

// withStore runs fn on the store the config names, then closes it.
func withStore(cmd *cobra.Command, fn func(ctx context.Context, cfg config.Config, st store.Store) error) error {
	cfg, err := config.Load(configPath(cmd))
	if err != nil {
		return &exitError{2, err}
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	st, err := store.OpenConfigured(ctx, cfg.DataDir, cfg.Store.DSN, cfg.Store.EncryptionKey)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(ctx, cfg, st)
}

// primaryAccount is the oldest top-level account: the default of --account.
func primaryAccount(ctx context.Context, svc *issuer.Service) (store.Account, error) {
	list, err := svc.Accounts(ctx)
	if err != nil {
		return store.Account{}, err
	}
	for _, a := range list {
		if a.ParentSid == "" {
			return a, nil
		}
	}
	return store.Account{}, errors.New("no account yet: run \"traverse accounts create\" or start \"traverse serve\"")
}

// notFound turns store.ErrNotFound into a message naming what was looked for.
func notFound(err error, what, sid string) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no %s %s", what, sid)
	}
	return err
}

// newAccountsCmd is "traverse accounts": manage accounts in the store.
func newAccountsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "accounts",
		Short: "Create, list, show, suspend accounts and rotate their auth tokens",
	}
	cmd.AddCommand(newAccountsCreateCmd(), newAccountsListCmd(), newAccountsShowCmd(),
		newAccountStatusCmd("suspend", store.StatusSuspended, "Suspend an account: its auth token and keys stop working at once"),
		newAccountStatusCmd("activate", store.StatusActive, "Reactivate a suspended account"),
		newAccountsRotateCmd())
	return cmd
}

func newAccountsCreateCmd() *cobra.Command {
	var (
		name, parent string
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an account (a subaccount with --parent) and print its SID and auth token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				a, err := svc.CreateAccount(ctx, name, parent)
				if err != nil {
					return notFound(err, "parent account", parent)
				}
				return printAccount(cmd.OutOrStdout(), a, true, asJSON)
			})
		},
	}
	cmd.Flags().StringVar(&name, "friendly-name", "", "label of the account")
	cmd.Flags().StringVar(&parent, "parent", "", "SID of the parent account: create a subaccount")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newAccountsListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List accounts (without auth tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				list, err := svc.Accounts(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					out := struct {
						Accounts []issuer.AccountResource `json:"accounts"`
					}{Accounts: []issuer.AccountResource{}}
					for _, a := range list {
						out.Accounts = append(out.Accounts, issuer.NewAccountResource(a, false))
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SID\tSTATUS\tPARENT\tCREATED\tNAME")
				for _, a := range list {
					parent := a.ParentSid
					if parent == "" {
						parent = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Sid, a.Status, parent, a.DateCreated.Format("2006-01-02 15:04:05Z"), a.FriendlyName)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newAccountsShowCmd() *cobra.Command {
	var asJSON, showToken bool
	cmd := &cobra.Command{
		Use:   "show ACCOUNT_SID",
		Short: "Show an account (its auth token with --show-token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				a, err := svc.Account(ctx, args[0])
				if err != nil {
					return notFound(err, "account", args[0])
				}
				return printAccount(cmd.OutOrStdout(), a, showToken, asJSON)
			})
		},
	}
	cmd.Flags().BoolVar(&showToken, "show-token", false, "include the auth token")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newAccountStatusCmd(use string, status store.Status, short string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use + " ACCOUNT_SID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				a, err := svc.SetAccountStatus(ctx, args[0], status)
				if err != nil {
					return notFound(err, "account", args[0])
				}
				return printAccount(cmd.OutOrStdout(), a, false, asJSON)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newAccountsRotateCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate-token ACCOUNT_SID",
		Short: "Give an account a new auth token (the old one stops working at once) and print it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				a, err := svc.RotateAuthToken(ctx, args[0])
				if err != nil {
					return notFound(err, "account", args[0])
				}
				return printAccount(cmd.OutOrStdout(), a, true, asJSON)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

// printAccount prints an account as Twilio's Account JSON or as text.
func printAccount(w io.Writer, a store.Account, withToken, asJSON bool) error {
	if asJSON {
		return printJSON(w, issuer.NewAccountResource(a, withToken))
	}
	fmt.Fprintf(w, "Account SID:   %s\n", a.Sid)
	if withToken {
		fmt.Fprintf(w, "Auth token:    %s\n", a.AuthToken)
	}
	fmt.Fprintf(w, "Friendly name: %s\nStatus:        %s\n", a.FriendlyName, a.Status)
	if a.ParentSid != "" {
		fmt.Fprintf(w, "Parent:        %s\n", a.ParentSid)
	}
	fmt.Fprintf(w, "Created:       %s\nUpdated:       %s\n", a.DateCreated.Format(issuer.TimeFormat), a.DateUpdated.Format(issuer.TimeFormat))
	return nil
}
