package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/issuer"
	"github.com/traverse/traverse/store"
)

// keyJSON is Twilio's Key JSON plus the account it belongs to.
type keyJSON struct {
	issuer.KeyResource
	AccountSid string `json:"account_sid"`
}

func newKeyJSON(k store.Key, withSecret bool) keyJSON {
	return keyJSON{KeyResource: issuer.NewKeyResource(k, withSecret), AccountSid: k.AccountSid}
}

// newKeysCmd is "traverse keys": manage API keys in the store.
func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and delete API keys",
	}
	cmd.AddCommand(newKeysCreateCmd(), newKeysListCmd(), newKeysDeleteCmd())
	return cmd
}

// accountFlag resolves --account, defaulting to the primary account.
func accountFlag(ctx context.Context, svc *issuer.Service, sid string) (string, error) {
	if sid == "" {
		a, err := primaryAccount(ctx, svc)
		return a.Sid, err
	}
	if _, err := svc.Account(ctx, sid); err != nil {
		return "", notFound(err, "account", sid)
	}
	return sid, nil
}

func newKeysCreateCmd() *cobra.Command {
	var (
		account, name string
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an API key and print its SID and secret (shown only now)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				sid, err := accountFlag(ctx, svc, account)
				if err != nil {
					return err
				}
				k, err := svc.CreateKey(ctx, sid, name)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), newKeyJSON(k, true))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Key SID:     %s\nSecret:      %s\nAccount SID: %s\n", k.Sid, k.Secret, k.AccountSid)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "account SID (default: the primary account)")
	cmd.Flags().StringVar(&name, "friendly-name", "", "label of the key")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newKeysListCmd() *cobra.Command {
	var (
		account string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List an account's API keys (without secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				sid, err := accountFlag(ctx, svc, account)
				if err != nil {
					return err
				}
				keys, err := svc.Keys(ctx, sid)
				if err != nil {
					return err
				}
				if asJSON {
					out := struct {
						Keys []keyJSON `json:"keys"`
					}{Keys: []keyJSON{}}
					for _, k := range keys {
						out.Keys = append(out.Keys, newKeyJSON(k, false))
					}
					return printJSON(cmd.OutOrStdout(), out)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SID\tACCOUNT\tCREATED\tNAME")
				for _, k := range keys {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Sid, k.AccountSid, k.DateCreated.Format("2006-01-02 15:04:05Z"), k.FriendlyName)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "account SID (default: the primary account)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newKeysDeleteCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "delete KEY_SID",
		Short: "Delete an API key: it authenticates nothing from that moment on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				k, err := svc.FindKey(ctx, args[0])
				if err != nil {
					return notFound(err, "key", args[0])
				}
				if err := svc.DeleteKey(ctx, k.AccountSid, k.Sid); err != nil {
					return notFound(err, "key", args[0])
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), struct {
						Sid        string `json:"sid"`
						AccountSid string `json:"account_sid"`
						Deleted    bool   `json:"deleted"`
					}{k.Sid, k.AccountSid, true})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted %s (account %s)\n", k.Sid, k.AccountSid)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}
