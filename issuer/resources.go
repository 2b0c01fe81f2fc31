package issuer

import (
	"strconv"
	"time"

	"github.com/traverse/traverse/store"
)

// TimeFormat is RFC 2822 as Twilio writes it: "Fri, 01 May 2020 01:42:57 +0000".
const TimeFormat = time.RFC1123Z

func formatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// TokenResource is the JSON of Twilio's Token resource. ttl is a string:
// twilio-go fails to decode a number there.
type TokenResource struct {
	AccountSid  string      `json:"account_sid"`
	DateCreated string      `json:"date_created"`
	DateUpdated string      `json:"date_updated"`
	ICEServers  []ICEServer `json:"ice_servers"`
	Password    string      `json:"password"`
	TTL         string      `json:"ttl"`
	Username    string      `json:"username"`
}

// Resource returns t as Twilio's JSON.
func (t Token) Resource() TokenResource {
	return TokenResource{
		AccountSid:  t.AccountSid,
		DateCreated: formatTime(t.DateCreated),
		DateUpdated: formatTime(t.DateUpdated),
		ICEServers:  t.ICEServers,
		Password:    t.Password,
		TTL:         strconv.FormatInt(int64(t.TTL/time.Second), 10),
		Username:    t.Username,
	}
}

// KeyResource is the JSON of Twilio's Key resource; Secret only in the answer
// that creates the key.
type KeyResource struct {
	Sid          string `json:"sid"`
	FriendlyName string `json:"friendly_name"`
	DateCreated  string `json:"date_created"`
	DateUpdated  string `json:"date_updated"`
	Secret       string `json:"secret,omitempty"`
}

// NewKeyResource returns k as Twilio's JSON, with its secret when withSecret.
func NewKeyResource(k store.Key, withSecret bool) KeyResource {
	r := KeyResource{
		Sid:          k.Sid,
		FriendlyName: k.FriendlyName,
		DateCreated:  formatTime(k.DateCreated),
		DateUpdated:  formatTime(k.DateUpdated),
	}
	if withSecret {
		r.Secret = k.Secret
	}
	return r
}

// AccountResource is the JSON of Twilio's Account resource.
type AccountResource struct {
	Sid             string `json:"sid"`
	OwnerAccountSid string `json:"owner_account_sid"`
	FriendlyName    string `json:"friendly_name"`
	Status          string `json:"status"`
	Type            string `json:"type"`
	AuthToken       string `json:"auth_token,omitempty"`
	DateCreated     string `json:"date_created"`
	DateUpdated     string `json:"date_updated"`
	URI             string `json:"uri"`
}

// NewAccountResource returns a as Twilio's JSON, with its auth token when
// withToken. owner_account_sid is the parent, or the account itself for a
// top-level account, as Twilio does.
func NewAccountResource(a store.Account, withToken bool) AccountResource {
	owner := a.ParentSid
	if owner == "" {
		owner = a.Sid
	}
	r := AccountResource{
		Sid:             a.Sid,
		OwnerAccountSid: owner,
		FriendlyName:    a.FriendlyName,
		Status:          string(a.Status),
		Type:            "Full",
		DateCreated:     formatTime(a.DateCreated),
		DateUpdated:     formatTime(a.DateUpdated),
		URI:             "/2010-04-01/Accounts/" + a.Sid + ".json",
	}
	if withToken {
		r.AuthToken = a.AuthToken
	}
	return r
}

// KeyList is a page of Twilio's Key list.
type KeyList struct {
	Keys            []KeyResource `json:"keys"`
	End             int           `json:"end"`
	FirstPageURI    string        `json:"first_page_uri"`
	NextPageURI     *string       `json:"next_page_uri"`
	Page            int           `json:"page"`
	PageSize        int           `json:"page_size"`
	PreviousPageURI *string       `json:"previous_page_uri"`
	Start           int           `json:"start"`
	URI             string        `json:"uri"`
}

// Paging defaults, as Twilio's.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// NewKeyList returns page (from 0) of pageSize keys, listed at path
// ("/2010-04-01/Accounts/AC…/Keys.json"), with Twilio's paging fields.
func NewKeyList(keys []store.Key, path string, page, pageSize int) KeyList {
	pageURI := func(p int) string {
		return path + "?PageSize=" + strconv.Itoa(pageSize) + "&Page=" + strconv.Itoa(p)
	}
	in, pg := cutPage(keys, page, pageSize, pageURI)
	l := KeyList{
		Keys:  make([]KeyResource, 0, len(in)),
		Start: pg.Start, End: pg.End, Page: pg.Page, PageSize: pg.PageSize,
		FirstPageURI: pg.FirstPageURI, URI: pg.URI, NextPageURI: pg.NextPageURI, PreviousPageURI: pg.PreviousPageURI,
	}
	for _, k := range in {
		l.Keys = append(l.Keys, NewKeyResource(k, false))
	}
	return l
}

// paging is Twilio's paging envelope of a list page.
type paging struct {
	End             int     `json:"end"`
	FirstPageURI    string  `json:"first_page_uri"`
	NextPageURI     *string `json:"next_page_uri"`
	Page            int     `json:"page"`
	PageSize        int     `json:"page_size"`
	PreviousPageURI *string `json:"previous_page_uri"`
	Start           int     `json:"start"`
	URI             string  `json:"uri"`
}

// cutPage returns page (from 0) of size items and its paging fields, with
// the page URIs pageURI makes.
func cutPage[T any](items []T, page, size int, pageURI func(int) string) ([]T, paging) {
	start := min(page*size, len(items))
	end := min(start+size, len(items))
	p := paging{
		Start:        page * size,
		End:          max(page*size+end-start-1, 0),
		Page:         page,
		PageSize:     size,
		FirstPageURI: pageURI(0),
		URI:          pageURI(page),
	}
	if end < len(items) {
		next := pageURI(page + 1)
		p.NextPageURI = &next
	}
	if page > 0 {
		prev := pageURI(page - 1)
		p.PreviousPageURI = &prev
	}
	return items[start:end], p
}

// ParsePaging parses the Page and PageSize list parameters ("" gives 0 and
// DefaultPageSize).
func ParsePaging(pageParam, sizeParam string) (page, size int, err error) {
	size = DefaultPageSize
	if sizeParam != "" {
		n, err := strconv.Atoi(sizeParam)
		if err != nil || n < 1 || n > MaxPageSize {
			return 0, 0, &ParamError{Param: "PageSize", Message: "Invalid PageSize: must be an integer from 1 to 1000"}
		}
		size = n
	}
	if pageParam != "" {
		n, err := strconv.Atoi(pageParam)
		if err != nil || n < 0 || n > 1_000_000 {
			return 0, 0, &ParamError{Param: "Page", Message: "Invalid Page: must be an integer from 0"}
		}
		page = n
	}
	return page, size, nil
}
