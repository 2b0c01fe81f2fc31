package relay

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/traverse/traverse/auth"
)

// authenticate returns the long-term key of a signed request m (Allocate,
// Refresh, CreatePermission, ChannelBind) from username, or the reason it
// refuses it; authorize then checks MESSAGE-INTEGRITY with the key.
//
// Beyond the credential format it enforces two things:
// a request on an existing allocation must carry the username that created
// it, and (unless auth.strict_expiry) an expired TURN REST username is still
// good for the allocation it created, so a live call is not dropped at expiry.
func (s *Server) authenticate(username, realm string, r *request) ([]byte, string) {
	st, src := s.state.Load(), r.src
	live, hasLive := s.allocs.get(r.key)
	// A source over its failure budget is refused before any check, so a
	// guesser learns nothing, even from the right password. The owner of a
	// live allocation keeps refreshing it: the password was proven.
	if !(hasLive && live.username == username) && s.guesses.Blocked(sourceOf(src), s.now()) {
		return nil, s.refuse(AuthRateLimited, src)
	}
	if realm != s.realm {
		return nil, s.refuse(AuthWrongRealm, src)
	}
	if s.isRevoked(username) {
		return nil, s.refuse(AuthRevoked, src)
	}
	if hasLive && live.username != username {
		return nil, s.refuse(AuthOwnerMismatch, src)
	}

	if k, ok := st.userKeys[username]; ok {
		return k, ""
	}

	_, _, err := auth.CheckUsername(username, s.now(), st.policy)
	if err != nil {
		grace := errors.Is(err, auth.ErrExpired) && hasLive && !st.strictExpiry
		if !grace {
			return nil, s.refuse(reasonOf(err), src)
		}
	}
	if st.secrets.Len() == 0 {
		return nil, s.refuse(AuthUnknownUser, src)
	}
	return selectKey(username, realm, st.secrets.Passwords(username), r.m), ""
}

// Failed TURN authentications allowed per source (an IP, an IPv6 /64):
// guessRate a second in bursts of guessBurst, far above what a real client
// retries. Over it, the source is refused without a check until its bucket
// refills, and a warning names it at most once a minute.
const (
	guessRate      = rate.Limit(10)
	guessBurst     = 20
	guessTableSize = 65536
	guessWarnEvery = time.Minute
)

// refuse counts a refusal and, unless it is an owner mismatch (no guess),
// spends from the source's failure budget; the details go to debug only,
// because anyone can send a bad credential and must not fill the logs. It
// returns reason.
func (s *Server) refuse(reason string, src net.Addr) string {
	s.metrics.auth.WithLabelValues(reason).Inc()
	if ce := s.log.Check(zap.DebugLevel, "auth refused"); ce != nil {
		ce.Write(zap.String("reason", reason), zap.Stringer("client", src))
	}
	source, now := sourceOf(src), s.now()
	switch reason {
	case AuthOwnerMismatch:
	case AuthRateLimited:
		if s.guessWarn.Allow(source, now) {
			s.log.Warn("turn authentication rate-limited: too many failures from one source",
				zap.String("source", source.String()), zap.Float64("per_second", float64(guessRate)), zap.Int("burst", guessBurst))
		}
	default:
		s.guesses.Spend(source, now)
	}
	return reason
}

func reasonOf(err error) string {
	switch {
	case errors.Is(err, auth.ErrExpired):
		return AuthExpired
	case errors.Is(err, auth.ErrTooFarFuture):
		return AuthTooFarFuture
	case errors.Is(err, auth.ErrMalformed):
		return AuthMalformed
	}
	return AuthUnknownUser
}

// quota is asked before an allocation is made (486 when it says no).
func (s *Server) quota(username string) bool {
	st := s.state.Load()
	switch {
	case s.draining.Load():
		s.metrics.quotaRejected.WithLabelValues("draining").Inc()
		return false
	case st.quotaTotal > 0 && s.allocs.len() >= st.quotaTotal:
		s.metrics.quotaRejected.WithLabelValues("total").Inc()
		return false
	case st.quotaPerUser > 0 && s.allocs.countUser(quotaKey(username, st)) >= st.quotaPerUser:
		s.metrics.quotaRejected.WithLabelValues("per_user").Inc()
		return false
	case st.quotaAccount > 0 && s.overAccountQuota(username, st):
		s.metrics.quotaRejected.WithLabelValues("per_account").Inc()
		return false
	}
	return true
}

// overAccountQuota reports whether username's account already holds
// relay.quota.per_account allocations. Usernames without an account
// (static users, `traverse credentials`) count only per user.
func (s *Server) overAccountQuota(username string, st *state) bool {
	account := accountKey(username, st)
	return account != "" && s.allocs.countAccount(account) >= st.quotaAccount
}

// accountKey is the AccountSid an issuer-minted username names, else "".
func accountKey(username string, st *state) string {
	if _, static := st.userKeys[username]; static {
		return ""
	}
	_, user, err := auth.ParseUsername(username)
	if err != nil {
		return ""
	}
	sid, _ := auth.AccountOf(user)
	return sid
}

// quotaKey is the user a per-user quota counts: the part of a TURN REST
// username after the expiry (so minting fresh credentials does not escape
// it), or a static user's name. The issuer's client-side credentials name
// "<AccountSid>:<identity>:<random>": their user is the account's identity,
// so the random part is dropped. A Tokens-resource credential,
// "<AccountSid>:<random>", names no end user and counts on its own.
func quotaKey(username string, st *state) string {
	if _, ok := st.userKeys[username]; ok {
		return username
	}
	_, user, err := auth.ParseUsername(username)
	if err != nil {
		return username
	}
	if strings.Count(user, ":") == 2 && strings.HasPrefix(user, "AC") {
		return user[:strings.LastIndexByte(user, ':')]
	}
	return user
}

// permit applies the peer policy to a CreatePermission or ChannelBind.
func (s *Server) permit(ip netip.Addr) bool {
	allowed, why := s.state.Load().peers.AllowIP(ip)
	if !allowed {
		s.metrics.peerDenied.WithLabelValues(why).Inc()
		if ce := s.log.Check(zap.DebugLevel, "peer denied"); ce != nil {
			ce.Write(zap.String("peer", ip.String()), zap.String("reason", why))
		}
	}
	return allowed
}
