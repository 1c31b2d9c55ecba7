package config

import (
	"sort"
	"strings"
)

// didYouMean is " (did you mean X?)" for the known key nearest to key, or
// "" when none is near enough to be a likely typo. A key that is a known
// key's last part ("max_connections" for "limits.max_connections") is
// answered with that key: it was written outside its table.
func didYouMean(key string, known map[string]bool) string {
	keys := make([]string, 0, len(known))
	for k := range known {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	best, bestDist := "", -1
	for _, k := range keys {
		if strings.HasSuffix(k, "."+key) {
			return " (did you mean " + k + "?)"
		}
		d := editDistance(key, k)
		if bestDist < 0 || d < bestDist {
			best, bestDist = k, d
		}
	}
	// Within a third of the key's length (at least 1, at most 3 edits):
	// nearer than that is a typo, farther is another word.
	limit := min(max(len(key)/3, 1), 3)
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// EnvVar is the environment variable that sets key: ALKNET_ and the key
// in upper case with dots as underscores (ALKNET_LIMITS_MAX_CONNECTIONS).
func EnvVar(key string) string {
	return "ALKNET_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}
