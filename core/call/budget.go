package call

import (
	"sync/atomic"
)

// Budget bounds the request bytes a connection, or the whole node, holds
// in flight: frames being read and requests being served
// (docs/architecture.md D14). Safe for concurrent use; a nil Budget
// bounds nothing.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes (0: unbounded).
func NewBudget(limit int64) *Budget {
	if limit <= 0 {
		return nil
	}
	return &Budget{limit: limit}
}

func (b *Budget) acquire(n int) bool {
	if b == nil {
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

func (b *Budget) release(n int) {
	if b != nil && n > 0 {
		b.used.Add(-int64(n))
	}
}

// Used is how many bytes are held now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Limit is the budget's size (0: unbounded).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// hold is what one frame holds of a connection's and the node's budgets,
// released once the frame — for a request, the request — is done.
type hold struct {
	conn, node *Budget
	n          int
	over       *Budget // the budget that refused, if one did
}

// reserve takes n more bytes from both budgets, or refuses.
func (h *hold) reserve(n int) error {
	if !h.conn.acquire(n) {
		h.over = h.conn
		return ErrOverBudget
	}
	if !h.node.acquire(n) {
		h.conn.release(n)
		h.over = h.node
		return ErrOverBudget
	}
	h.n += n
	return nil
}

// done gives everything back.
func (h *hold) done() {
	h.conn.release(h.n)
	h.node.release(h.n)
	h.n = 0
}
