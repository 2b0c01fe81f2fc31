package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/doctor"
)

func newDoctorCmd() *cobra.Command {
	var (
		asJSON  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a config and the server it describes: ports, certificate, limits, STUN and a TURN round trip",
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := doctor.Run(cmd.Context(), configPath(cmd), doctor.Options{Timeout: timeout})
			if asJSON {
				if err := rep.WriteJSON(cmd.OutOrStdout()); err != nil {
					return err
				}
			} else {
				rep.WriteText(cmd.OutOrStdout())
			}
			if rep.Failed() {
				return &exitError{1, errors.New("doctor: some checks failed")}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "bound on each network check")
	return cmd
}
