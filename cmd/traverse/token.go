package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/traverse/traverse/auth"
)

// Environment variables the token commands read secrets from, so that they
// need not appear on the command line (and in shell history or ps).
const (
	envKeySecret = "TRAVERSE_KEY_SECRET"
	envAuthToken = "TRAVERSE_AUTH_TOKEN"
)

// newTokenCmd is "traverse token": mint and inspect Twilio Access Tokens and
// Capability Tokens offline, with the auth package.
func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint and verify Twilio Access Tokens and Capability Tokens",
	}
	cmd.AddCommand(newTokenAccessCmd(), newTokenCapabilityCmd(), newTokenVerifyCmd())
	return cmd
}

func newTokenAccessCmd() *cobra.Command {
	var (
		t                                   auth.AccessToken
		secret, voiceApp, videoRoom, chatSv string
		voiceIncoming, video, asJSON        bool
		ntsTTL                              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "access",
		Short: "Mint an Access Token signed with an API key secret",
		Long: "Mint a Twilio Access Token (JWT, HS256) signed with an API key's secret.\n" +
			"The secret comes from --secret or $" + envKeySecret + ".",
		Example: "  TRAVERSE_KEY_SECRET=… traverse token access --account AC… --key SK… --identity alice --voice-app AP… --nts-ttl 1h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if secret == "" {
				secret = os.Getenv(envKeySecret)
			}
			if secret == "" {
				return fmt.Errorf("no key secret: pass --secret or set $%s", envKeySecret)
			}
			if voiceApp != "" || voiceIncoming {
				t.Grants.Voice = &auth.VoiceGrant{IncomingAllow: voiceIncoming, OutgoingApplicationSid: voiceApp}
			}
			if video || videoRoom != "" {
				t.Grants.Video = &auth.VideoGrant{Room: videoRoom}
			}
			if chatSv != "" {
				t.Grants.Chat = &auth.ChatGrant{ServiceSid: chatSv}
			}
			if cmd.Flags().Changed("nts-ttl") {
				t.Grants.NTS = &auth.NTSGrant{TTL: ntsTTL}
			}
			tok, err := t.Sign([]byte(secret), time.Now())
			if err != nil {
				return err
			}
			return printToken(cmd.OutOrStdout(), tok, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&t.AccountSid, "account", "", "account SID (AC…), the token's sub")
	f.StringVar(&t.KeySid, "key", "", "API key SID (SK…), the token's iss")
	f.StringVar(&secret, "secret", "", "API key secret (default $"+envKeySecret+")")
	f.StringVar(&t.Identity, "identity", "", "grants.identity (only letters, digits and _ with a voice grant)")
	f.StringVar(&t.Region, "region", "", "Twilio region put in the header as twr (such as ie1)")
	f.DurationVar(&t.TTL, "ttl", time.Hour, "lifetime, at most 24h")
	f.StringVar(&voiceApp, "voice-app", "", "voice grant: outgoing TwiML application SID (AP…)")
	f.BoolVar(&voiceIncoming, "voice-incoming", false, "voice grant: allow incoming calls")
	f.BoolVar(&video, "video", false, "video grant for any room")
	f.StringVar(&videoRoom, "video-room", "", "video grant for this room")
	f.StringVar(&chatSv, "chat-service", "", "chat grant: Conversations service SID (IS…)")
	f.DurationVar(&ntsTTL, "nts-ttl", 0, "nts grant: cap on the TURN credentials' lifetime (0: grant without a cap)")
	f.BoolVar(&asJSON, "json", false, "print the token with its decoded header and claims as JSON")
	_ = cmd.MarkFlagRequired("account")
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func newTokenCapabilityCmd() *cobra.Command {
	var (
		t                                      auth.CapabilityToken
		authToken, incoming, outgoing, clientN string
		params                                 []string
		asJSON                                 bool
	)
	cmd := &cobra.Command{
		Use:   "capability",
		Short: "Mint a Twilio Client Capability Token signed with an auth token",
		Long: "Mint a Capability Token (JWT, HS256) signed with the account's auth token.\n" +
			"The auth token comes from --auth-token or $" + envAuthToken + ".",
		Example: "  TRAVERSE_AUTH_TOKEN=… traverse token capability --account AC… --incoming alice --outgoing AP… --param to=bob",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if authToken == "" {
				authToken = os.Getenv(envAuthToken)
			}
			if authToken == "" {
				return fmt.Errorf("no auth token: pass --auth-token or set $%s", envAuthToken)
			}
			if incoming != "" {
				t.Scopes = append(t.Scopes, auth.IncomingClientScope{ClientName: incoming})
			}
			if outgoing != "" {
				o := auth.OutgoingClientScope{ApplicationSid: outgoing, ClientName: clientN}
				for _, p := range params {
					k, v, ok := strings.Cut(p, "=")
					if !ok || k == "" {
						return fmt.Errorf("--param %q: want name=value", p)
					}
					o.Params = append(o.Params, auth.Param{Name: k, Value: v})
				}
				t.Scopes = append(t.Scopes, o)
			} else if clientN != "" || len(params) > 0 {
				return errors.New("--client-name and --param need --outgoing")
			}
			if len(t.Scopes) == 0 {
				return errors.New("no scope: pass --incoming and/or --outgoing")
			}
			tok, err := t.Sign([]byte(authToken), time.Now())
			if err != nil {
				return err
			}
			return printToken(cmd.OutOrStdout(), tok, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&t.AccountSid, "account", "", "account SID (AC…), the token's iss")
	f.StringVar(&authToken, "auth-token", "", "the account's auth token (default $"+envAuthToken+")")
	f.StringVar(&incoming, "incoming", "", "allow incoming calls to this client name")
	f.StringVar(&outgoing, "outgoing", "", "allow outgoing calls through this TwiML application (AP…)")
	f.StringVar(&clientN, "client-name", "", "outgoing: the caller's client name")
	f.StringArrayVar(&params, "param", nil, "outgoing: name=value passed to the application (repeatable, order kept)")
	f.DurationVar(&t.TTL, "ttl", time.Hour, "lifetime, at most 24h")
	f.BoolVar(&asJSON, "json", false, "print the token with its decoded header and claims as JSON")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}

// tokenVerdict is what "token verify" prints.
type tokenVerdict struct {
	Kind             string          `json:"kind"`
	Header           json.RawMessage `json:"header,omitempty"`
	Claims           json.RawMessage `json:"claims,omitempty"`
	SignatureChecked bool            `json:"signature_checked"`
	Valid            *bool           `json:"valid"`
	Code             int             `json:"code,omitempty"`
	Message          string          `json:"message,omitempty"`
	Detail           string          `json:"detail,omitempty"`
}

func newTokenVerifyCmd() *cobra.Command {
	var (
		secret string
		at     int64
	)
	cmd := &cobra.Command{
		Use:   "verify <jwt>",
		Short: "Decode a token and, given its secret, verify it (JSON verdict with Twilio's code)",
		Long: "Decode an Access Token or a Capability Token and print its header and claims as JSON.\n" +
			"With --secret (or $" + envKeySecret + " for an Access Token, $" + envAuthToken + " for a\n" +
			"Capability Token) the token is verified as traverse would: the verdict carries Twilio's error\n" +
			"code and the command fails when it is refused. Without a secret the signature is not checked.\n" +
			"The key is trusted to belong to the token's account.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			token := strings.TrimSpace(args[0])
			v := tokenVerdict{Kind: "capability"}
			v.Header, v.Claims = decodeTokenParts(token)
			var hdr struct {
				Cty string `json:"cty"`
			}
			_ = json.Unmarshal(v.Header, &hdr)
			env := envAuthToken
			if hdr.Cty != "" {
				v.Kind, env = "access", envKeySecret
			}
			if secret == "" {
				secret = os.Getenv(env)
			}
			now := time.Now()
			if at != 0 {
				now = time.Unix(at, 0)
			}
			var err error
			if secret != "" {
				v.SignatureChecked = true
				if v.Kind == "access" {
					_, err = auth.VerifyAccessToken(token, func(string) (string, []byte, error) {
						return claimedAccount(v.Claims), []byte(secret), nil
					}, now)
				} else {
					_, err = auth.VerifyCapabilityToken(token, func(string) ([]byte, error) { return []byte(secret), nil }, now)
				}
				ok := err == nil
				v.Valid = &ok
				var te *auth.TokenError
				if errors.As(err, &te) {
					v.Code, v.Message, v.Detail = te.Code, te.Message, te.Detail
				}
			} else {
				v.Message = "signature not checked: no secret given"
			}
			if perr := writeTokenJSON(cmd.OutOrStdout(), v); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().StringVar(&secret, "secret", "", "API key secret or auth token that signed the token (default $"+envKeySecret+" / $"+envAuthToken+")")
	cmd.Flags().Int64Var(&at, "now", 0, "verify at this Unix time instead of now")
	return cmd
}

// claimedAccount is the token's own sub: "verify --secret" asserts the key
// is that account's.
func claimedAccount(claims json.RawMessage) string {
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(claims, &c)
	return c.Sub
}

// decodeTokenParts returns the header and payload JSON of token, or nil for a
// part that is not base64url JSON.
func decodeTokenParts(token string) (header, claims json.RawMessage) {
	parts := strings.Split(token, ".")
	dec := func(i int) json.RawMessage {
		if i >= len(parts) {
			return nil
		}
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || !json.Valid(b) {
			return nil
		}
		return b
	}
	return dec(0), dec(1)
}

// printToken prints the token alone, or with --json its decoded parts.
func printToken(w io.Writer, tok string, asJSON bool) error {
	if !asJSON {
		_, err := fmt.Fprintln(w, tok)
		return err
	}
	h, c := decodeTokenParts(tok)
	return writeTokenJSON(w, map[string]any{"token": tok, "header": h, "claims": c})
}

func writeTokenJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
