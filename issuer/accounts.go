package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/traverse/traverse/auth"
	"github.com/traverse/traverse/store"
)

// MaxFriendlyNameLen is the longest FriendlyName accepted, in characters (Twilio's limit for keys).
const MaxFriendlyNameLen = 64

// PrimaryAccountName is the FriendlyName of the account made on first start.
const PrimaryAccountName = "Primary account"

func checkFriendlyName(name string) error {
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxFriendlyNameLen {
		return &ParamError{Param: "FriendlyName", Message: fmt.Sprintf(
			"Invalid FriendlyName: must be valid UTF-8 of at most %d characters", MaxFriendlyNameLen)}
	}
	return nil
}

func (s *Service) stamp() time.Time { return s.now().UTC().Truncate(time.Second) }

func (s *Service) newAccount(friendlyName, parentSid string) store.Account {
	now := s.stamp()
	return store.Account{
		Sid:          newSid(AccountSidPrefix),
		FriendlyName: friendlyName,
		AuthToken:    randomHex(16),
		Status:       store.StatusActive,
		ParentSid:    parentSid,
		DateCreated:  now,
		DateUpdated:  now,
	}
}

// EnsurePrimaryAccount makes the primary account on first start: with an empty
// store it creates one and returns it with created true (the caller prints its
// SID and auth token once, see FirstStartMessage). Otherwise it returns the
// oldest top-level account with created false. Nodes starting together on one
// empty store create a single account between them.
func (s *Service) EnsurePrimaryAccount(ctx context.Context) (a store.Account, created bool, err error) {
	a = s.newAccount(PrimaryAccountName, "")
	created, err = s.store.CreateFirstAccount(ctx, a)
	if err != nil || created {
		if created {
			s.log.Info("created the primary account")
		}
		return a, created, err
	}
	list, err := s.store.ListAccounts(ctx)
	if err != nil {
		return store.Account{}, false, err
	}
	for _, a := range list {
		if a.ParentSid == "" {
			return a, false, nil
		}
	}
	return store.Account{}, false, errors.New("issuer: the store has accounts but no top-level one")
}

// FirstStartMessage is what to print once when EnsurePrimaryAccount created
// the account: its SID and auth token and a curl line that mints a token from
// the issuer at baseURL (such as "http://127.0.0.1:8080"). caFile, when set,
// is the CA certificate curl needs to trust the issuer (--dev's self-signed
// one), so that the line works as printed.
func FirstStartMessage(a store.Account, baseURL, caFile string) string {
	cacert := ""
	if caFile != "" {
		cacert = "--cacert " + caFile + " "
	}
	return fmt.Sprintf(`Created the primary account (shown once; "traverse accounts show %s --show-token" shows it again):
  Account SID: %s
  Auth token:  %s
Mint a TURN credential:
  curl %s-X POST -u %s:%s %s/2010-04-01/Accounts/%s/Tokens.json
`, a.Sid, a.Sid, a.AuthToken, cacert, a.Sid, a.AuthToken, baseURL, a.Sid)
}

// CreateAccount creates an active account; with parentSid set it is a
// subaccount of that top-level account.
func (s *Service) CreateAccount(ctx context.Context, friendlyName, parentSid string) (store.Account, error) {
	if err := checkFriendlyName(friendlyName); err != nil {
		return store.Account{}, err
	}
	if parentSid != "" {
		parent, err := s.store.GetAccount(ctx, parentSid)
		if err != nil {
			return store.Account{}, err
		}
		if parent.ParentSid != "" {
			return store.Account{}, fmt.Errorf("%w: a subaccount cannot own subaccounts", ErrForbidden)
		}
	}
	if friendlyName == "" {
		friendlyName = "SubAccount Created at " + s.stamp().Format(TimeFormat)
		if parentSid == "" {
			friendlyName = "Account Created at " + s.stamp().Format(TimeFormat)
		}
	}
	a := s.newAccount(friendlyName, parentSid)
	if err := s.store.CreateAccount(ctx, a); err != nil {
		return store.Account{}, err
	}
	s.log.Info("created account", zap.String("sid", a.Sid), zap.String("parent_sid", parentSid))
	return a, nil
}

// Account returns an account, auth token included.
func (s *Service) Account(ctx context.Context, sid string) (store.Account, error) {
	return s.store.GetAccount(ctx, sid)
}

// Accounts returns every account, oldest first.
func (s *Service) Accounts(ctx context.Context) ([]store.Account, error) {
	return s.store.ListAccounts(ctx)
}

// SetAccountStatus suspends or reactivates an account. A suspended account
// authenticates nothing from that moment on, neither its auth token nor its keys.
func (s *Service) SetAccountStatus(ctx context.Context, sid string, status store.Status) (store.Account, error) {
	if !status.Valid() {
		return store.Account{}, &ParamError{Param: "Status", Message: fmt.Sprintf("Invalid Status %q: must be active or suspended", status)}
	}
	a, err := s.updateAccount(ctx, sid, func(a *store.Account) { a.Status = status })
	if err != nil {
		return a, err
	}
	return a, s.onStatusChange(ctx, a)
}

// RotateAuthToken gives an account a new auth token; the old one stops
// working at once.
func (s *Service) RotateAuthToken(ctx context.Context, sid string) (store.Account, error) {
	return s.updateAccount(ctx, sid, func(a *store.Account) { a.AuthToken = randomHex(16) })
}

func (s *Service) updateAccount(ctx context.Context, sid string, change func(*store.Account)) (store.Account, error) {
	a, err := s.store.GetAccount(ctx, sid)
	if err != nil {
		return store.Account{}, err
	}
	change(&a)
	a.DateUpdated = s.stamp()
	if err := s.store.UpdateAccount(ctx, a); err != nil {
		return store.Account{}, err
	}
	s.log.Info("updated account", zap.String("sid", a.Sid), zap.String("status", string(a.Status)))
	return a, nil
}

// CreateKey creates an API key for accountSid. The returned key carries its
// secret, which is to be shown to the caller once.
func (s *Service) CreateKey(ctx context.Context, accountSid, friendlyName string) (store.Key, error) {
	if err := checkFriendlyName(friendlyName); err != nil {
		return store.Key{}, err
	}
	now := s.stamp()
	k := store.Key{
		Sid:          newSid(KeySidPrefix),
		AccountSid:   accountSid,
		FriendlyName: friendlyName,
		Secret:       randomAlnum(32),
		DateCreated:  now,
		DateUpdated:  now,
	}
	if err := s.store.CreateKey(ctx, k); err != nil {
		return store.Key{}, err
	}
	s.log.Info("created API key", zap.String("sid", k.Sid), zap.String("account_sid", accountSid))
	return k, nil
}

// Key returns the key keySid of accountSid, or ErrNotFound when it does not
// exist or belongs to another account.
func (s *Service) Key(ctx context.Context, accountSid, keySid string) (store.Key, error) {
	k, err := s.store.GetKey(ctx, keySid)
	if err != nil {
		return store.Key{}, err
	}
	if k.AccountSid != accountSid {
		return store.Key{}, ErrNotFound
	}
	return k, nil
}

// FindKey returns the key keySid whatever its account (for the CLI).
func (s *Service) FindKey(ctx context.Context, keySid string) (store.Key, error) {
	return s.store.GetKey(ctx, keySid)
}

// Keys returns the keys of accountSid, oldest first.
func (s *Service) Keys(ctx context.Context, accountSid string) ([]store.Key, error) {
	return s.store.ListKeys(ctx, accountSid)
}

// DeleteKey deletes the key keySid of accountSid; it authenticates nothing
// from that moment on.
func (s *Service) DeleteKey(ctx context.Context, accountSid, keySid string) error {
	if err := s.store.DeleteKey(ctx, accountSid, keySid); err != nil {
		return err
	}
	if err := s.revokeMinted(ctx, store.RevokeKey, accountSid+":"+auth.KeyTag(keySid)); err != nil {
		return err
	}
	s.log.Info("deleted API key", zap.String("sid", keySid), zap.String("account_sid", accountSid))
	return nil
}
