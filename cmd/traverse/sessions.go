package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/issuer"
)

// newSessionsCmd is "traverse sessions": the live allocations every node
// sharing the store publishes, and their teardown.
func newSessionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List and kill live TURN allocations on every node sharing the store",
	}
	cmd.AddCommand(newSessionsListCmd(), newSessionsKillCmd())
	return cmd
}

func newSessionsListCmd() *cobra.Command {
	var (
		account string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List live allocations (of --account and its subaccounts, else of every account)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				if account != "" {
					if _, err := svc.Account(ctx, account); err != nil {
						return notFound(err, "account", account)
					}
				}
				live, err := svc.Allocations(ctx, account)
				if err != nil {
					return err
				}
				if asJSON {
					l := issuer.AllocationList{Allocations: []issuer.AllocationResource{}}
					for _, a := range live {
						l.Allocations = append(l.Allocations, issuer.NewAllocationResource(a.AccountSid, a))
					}
					return printJSON(cmd.OutOrStdout(), l)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SID\tNODE\tACCOUNT\tTRANSPORT\tCLIENT\tRELAY\tCREATED\tSENT\tRECEIVED")
				for _, a := range live {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", a.ID, a.Node, a.AccountSid, a.Transport,
						a.Client, a.Relay, a.Created.Format("2006-01-02 15:04:05Z"), a.BytesSent, a.BytesReceived)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "account SID (default: every account)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newSessionsKillCmd() *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:   "kill ALLOCATION_SID",
		Short: "Tear down a live allocation on whichever node holds it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIssuer(cmd, func(ctx context.Context, svc *issuer.Service) error {
				if err := svc.KillAllocation(ctx, account, args[0]); err != nil {
					return notFound(err, "live allocation", args[0])
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Killed %s\n", args[0])
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&account, "account", "", "only if it belongs to this account or its subaccounts")
	return cmd
}
