package issuer

import (
	"context"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/traverse/traverse/store"
)

// This file is the logic of Twilio's Usage Records resource for the TURN
// categories (served in usage_http.go). Usage lives in the store in hourly
// buckets per account and node region (package usage writes them); a record
// sums them over its period.

// UsageOptions configure the Usage Records and the sessions list.
type UsageOptions struct {
	// PricePerMegabyte is a decimal string ("0.0004"); empty means "0".
	PricePerMegabyte string
	// PriceUnit is the currency; empty means "usd".
	PriceUnit string
	// LiveWithin is how recently a node must have published its live
	// allocations for them to be listed: a few usage.flush_interval.
	LiveWithin time.Duration
}

// LiveWithin is UsageOptions.LiveWithin for nodes flushing every
// flushInterval (usage.flush_interval): three missed publications mean the
// node is gone.
func LiveWithin(flushInterval time.Duration) time.Duration {
	return 3*flushInterval + 2*time.Second
}

func (o UsageOptions) withDefaults() UsageOptions {
	if o.PricePerMegabyte == "" {
		o.PricePerMegabyte = "0"
	}
	if o.PriceUnit == "" {
		o.PriceUnit = "usd"
	}
	if o.LiveWithin <= 0 {
		o.LiveWithin = 30 * time.Second
	}
	return o
}

// CategoryTURN is Twilio's usage category for TURN relaying; a node with
// usage.region set also reports its traffic under CategoryTURN + "-" + region.
const CategoryTURN = "turnmegabytes"

// BytesPerMegabyte is the megabyte of the Usage Records: decimal, as data
// transfer is billed.
const BytesPerMegabyte = 1_000_000

// Usage Records subresources (the path element after Records/).
var usageSubresources = []string{"AllTime", "Daily", "LastMonth", "Monthly", "ThisMonth", "Today", "Yearly", "Yesterday"}

// UsageQuery is a Usage Records list request.
type UsageQuery struct {
	// Subresource is "" for Records itself, else one of Daily, Monthly, ….
	Subresource string
	// Category filters; "" means every category.
	Category string
	// StartDate and EndDate are "YYYY-MM-DD" or relative ("-30days").
	StartDate, EndDate string
	// IncludeSubaccounts sums the subaccounts' usage in (Twilio's default).
	IncludeSubaccounts bool
	// Page and PageSize page the records.
	Page, PageSize int
}

// UsageRecord is Twilio's usage record JSON. count, usage and price are
// decimal strings: twilio-go reads a number or a string, twilio-node passes
// them through.
type UsageRecord struct {
	AccountSid      string            `json:"account_sid"`
	APIVersion      string            `json:"api_version"`
	AsOf            string            `json:"as_of"`
	Category        string            `json:"category"`
	Count           string            `json:"count"`
	CountUnit       string            `json:"count_unit"`
	Description     string            `json:"description"`
	EndDate         string            `json:"end_date"`
	Price           string            `json:"price"`
	PriceUnit       string            `json:"price_unit"`
	StartDate       string            `json:"start_date"`
	SubresourceURIs map[string]string `json:"subresource_uris"`
	URI             string            `json:"uri"`
	Usage           string            `json:"usage"`
	UsageUnit       string            `json:"usage_unit"`
}

// UsageList is a page of usage records with Twilio's paging envelope.
type UsageList struct {
	UsageRecords []UsageRecord `json:"usage_records"`
	paging
}

const dateFormat = "2006-01-02"

var relativeDate = regexp.MustCompile(`^([+-]?)(\d{1,5})(days|months|years)$`)

// parseDate reads "YYYY-MM-DD" or a relative date ("-30days", "+0days",
// "-1months") against today (UTC midnight).
func parseDate(param, v string, today time.Time) (time.Time, error) {
	if d, err := time.Parse(dateFormat, v); err == nil {
		return d, nil
	}
	m := relativeDate.FindStringSubmatch(v)
	if m == nil {
		return time.Time{}, &ParamError{Param: param, Message: fmt.Sprintf("Invalid %s %q: must be YYYY-MM-DD or relative such as -30days", param, v)}
	}
	n, _ := strconv.Atoi(m[2])
	if m[1] == "-" {
		n = -n
	}
	switch m[3] {
	case "days":
		return today.AddDate(0, 0, n), nil
	case "months":
		return today.AddDate(0, n, 0), nil
	}
	return today.AddDate(n, 0, 0), nil
}

// period is a record's span of days, [start, end] inclusive, UTC midnights.
type period struct{ start, end time.Time }

// maxUsageDays bounds a request's span, so that Daily stays a bounded list.
const maxUsageDays = 20 * 366

// periods resolves the query's date range and splits it as the subresource
// does: one period, or one per day, month or year.
func periods(q UsageQuery, created, now time.Time) ([]period, error) {
	today := now.UTC().Truncate(24 * time.Hour)
	var start, end time.Time
	switch q.Subresource {
	case "Today":
		start, end = today, today
	case "Yesterday":
		start, end = today.AddDate(0, 0, -1), today.AddDate(0, 0, -1)
	case "ThisMonth":
		start, end = time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC), today
	case "LastMonth":
		first := time.Date(today.Year(), today.Month(), 1, 0, 0, 0, 0, time.UTC)
		start, end = first.AddDate(0, -1, 0), first.AddDate(0, 0, -1)
	default:
		start, end = created.UTC().Truncate(24*time.Hour), today
		if q.Subresource == "Daily" {
			start = today.AddDate(0, 0, -30)
		}
		var err error
		if q.StartDate != "" {
			if start, err = parseDate("StartDate", q.StartDate, today); err != nil {
				return nil, err
			}
		}
		if q.EndDate != "" {
			if end, err = parseDate("EndDate", q.EndDate, today); err != nil {
				return nil, err
			}
		}
		if start.After(end) {
			return nil, &ParamError{Param: "StartDate", Message: fmt.Sprintf("Invalid StartDate %s: it is after EndDate %s", start.Format(dateFormat), end.Format(dateFormat))}
		}
		if end.Sub(start) > maxUsageDays*24*time.Hour {
			return nil, &ParamError{Param: "StartDate", Message: fmt.Sprintf("Invalid date range: longer than %d days", maxUsageDays)}
		}
	}
	var next func(time.Time) time.Time
	switch q.Subresource {
	case "Daily":
		next = func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }
	case "Monthly":
		next = func(t time.Time) time.Time { return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC) }
	case "Yearly":
		next = func(t time.Time) time.Time { return time.Date(t.Year()+1, 1, 1, 0, 0, 0, 0, time.UTC) }
	default:
		return []period{{start, end}}, nil
	}
	var out []period
	for t := start; !t.After(end); t = next(t) {
		e := next(t).AddDate(0, 0, -1)
		if e.After(end) {
			e = end
		}
		out = append(out, period{t, e})
	}
	return out, nil
}

// UsageRecords lists acct's usage records for q.
func (s *Service) UsageRecords(ctx context.Context, acct store.Account, q UsageQuery) (UsageList, error) {
	now := s.now()
	ps, err := periods(q, acct.DateCreated, now)
	if err != nil {
		return UsageList{}, err
	}
	sids := []string{acct.Sid}
	if q.IncludeSubaccounts {
		if sids, err = s.accountTree(ctx, acct.Sid); err != nil {
			return UsageList{}, err
		}
	}
	from, to := ps[0].start, ps[len(ps)-1].end.AddDate(0, 0, 1)
	rows, err := s.store.ListUsage(ctx, sids, from, to)
	if err != nil {
		return UsageList{}, err
	}
	// Categories: the total, and one per region seen in the range.
	cats := []string{CategoryTURN}
	for _, r := range rows {
		if c := CategoryTURN + "-" + r.Region; r.Region != "" && !slices.Contains(cats, c) {
			cats = append(cats, c)
		}
	}
	slices.Sort(cats[1:])
	if q.Category != "" {
		if !slices.Contains(cats, q.Category) {
			cats = nil // unknown category: an empty list, as Twilio answers
		} else {
			cats = []string{q.Category}
		}
	}
	var all []UsageRecord
	for _, p := range ps {
		for _, c := range cats {
			var bytes int64
			for _, r := range rows {
				if r.Hour.Before(p.start) || !r.Hour.Before(p.end.AddDate(0, 0, 1)) {
					continue
				}
				if c == CategoryTURN || c == CategoryTURN+"-"+r.Region {
					bytes += r.BytesSent + r.BytesReceived
				}
			}
			all = append(all, s.usageRecord(acct.Sid, q.Subresource, c, p, bytes, now))
		}
	}
	return pageUsage(all, acct.Sid, q), nil
}

// usageRecord makes one record of bytes in category c over p.
func (s *Service) usageRecord(acct, sub, c string, p period, bytes int64, now time.Time) UsageRecord {
	mb := megabytes(bytes)
	desc := "TURN Megabytes"
	if c != CategoryTURN {
		desc += " (" + strings.TrimPrefix(c, CategoryTURN+"-") + ")"
	}
	base := "/2010-04-01/Accounts/" + acct + "/Usage/Records"
	recQuery := "?Category=" + url.QueryEscape(c) + "&StartDate=" + p.start.Format(dateFormat) + "&EndDate=" + p.end.Format(dateFormat)
	subs := map[string]string{}
	for _, sr := range usageSubresources {
		subs[snake(sr)] = base + "/" + sr + ".json?Category=" + url.QueryEscape(c)
	}
	return UsageRecord{
		AccountSid: acct, APIVersion: "2010-04-01", AsOf: now.UTC().Format("2006-01-02T15:04:05+00:00"),
		Category: c, Count: mb, CountUnit: "megabytes", Description: desc,
		StartDate: p.start.Format(dateFormat), EndDate: p.end.Format(dateFormat),
		Price: s.price(bytes), PriceUnit: s.usage.PriceUnit,
		SubresourceURIs: subs, URI: base + subPath(sub) + recQuery,
		Usage: mb, UsageUnit: "megabytes",
	}
}

// megabytes writes bytes/BytesPerMegabyte exactly, without trailing zeros.
func megabytes(bytes int64) string {
	return decimal(new(big.Rat).SetFrac64(bytes, BytesPerMegabyte))
}

// price is bytes priced at usage.price_per_megabyte.
func (s *Service) price(bytes int64) string {
	per, ok := new(big.Rat).SetString(s.usage.PricePerMegabyte)
	if !ok {
		return "0"
	}
	return decimal(per.Mul(per, new(big.Rat).SetFrac64(bytes, BytesPerMegabyte)))
}

// decimal formats r with at most 10 decimals, trailing zeros trimmed.
func decimal(r *big.Rat) string {
	v := r.FloatString(10)
	if strings.Contains(v, ".") {
		v = strings.TrimRight(strings.TrimRight(v, "0"), ".")
	}
	if v == "-0" {
		v = "0"
	}
	return v
}

// snake turns "ThisMonth" into "this_month", as Twilio names subresource URIs.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func subPath(sub string) string {
	if sub == "" {
		return ".json"
	}
	return "/" + sub + ".json"
}

// pageUsage cuts page q.Page of the records, with URIs that keep the query.
func pageUsage(all []UsageRecord, acct string, q UsageQuery) UsageList {
	v := url.Values{}
	if q.Category != "" {
		v.Set("Category", q.Category)
	}
	if q.StartDate != "" {
		v.Set("StartDate", q.StartDate)
	}
	if q.EndDate != "" {
		v.Set("EndDate", q.EndDate)
	}
	if !q.IncludeSubaccounts {
		v.Set("IncludeSubaccounts", "false")
	}
	v.Set("PageSize", strconv.Itoa(q.PageSize))
	path := "/2010-04-01/Accounts/" + acct + "/Usage/Records" + subPath(q.Subresource)
	pageURI := func(p int) string {
		v.Set("Page", strconv.Itoa(p))
		v.Set("PageToken", "PA"+strconv.Itoa(p))
		return path + "?" + v.Encode()
	}
	recs, pg := cutPage(all, q.Page, q.PageSize, pageURI)
	return UsageList{UsageRecords: append([]UsageRecord{}, recs...), paging: pg}
}

// accountTree is sid and its subaccounts' SIDs; "" means every account
// (the operator's view, for the CLI).
func (s *Service) accountTree(ctx context.Context, sid string) ([]string, error) {
	all, err := s.store.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	if sid != "" {
		out = append(out, sid)
	}
	for _, a := range all {
		if sid == "" || a.ParentSid == sid {
			out = append(out, a.Sid)
		}
	}
	return out, nil
}
