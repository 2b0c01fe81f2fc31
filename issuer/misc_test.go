package issuer_test

import (
	"fmt"
	"sort"
)

func sorted(s []string) []string { sort.Strings(s); return s }

func toString(v any) string { return fmt.Sprint(v) }
