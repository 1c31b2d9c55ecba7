package git

import "sync"

// limiter counts the git programs running, in all and per key (an
// identity, or an anonymous caller's address) (docs/architecture.md D14).
type limiter struct {
	mu    sync.Mutex
	total int
	per   map[string]int
}

// acquire takes a place for key under the bounds, or reports false.
// release gives it back.
func (l *limiter) acquire(key string, max, maxPer int) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= max || l.per[key] >= maxPer {
		return nil, false
	}
	if l.per == nil {
		l.per = map[string]int{}
	}
	l.total++
	l.per[key]++
	return sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.per[key]--; l.per[key] == 0 {
			delete(l.per, key)
		}
	}), true
}
