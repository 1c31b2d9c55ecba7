package call

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Bounds of an input the validator reads. The JSON Schema library parses
// number literals as big numbers, in time that grows with the square of
// their length: a literal is refused by its length before any parsing.
const (
	// MaxNumberLiteral is the longest number literal in an input, in
	// characters (a float64 needs 24; a big integer of 100 digits passes).
	MaxNumberLiteral = 100
	// MaxInputDepth is how deeply arrays and objects may nest.
	MaxInputDepth = 128
)

// checkLiterals scans input once, without building anything, and refuses
// number literals longer than MaxNumberLiteral and nesting deeper than
// MaxInputDepth. Strings are bounded by the frame size already.
func checkLiterals(input []byte) error {
	d := jsontext.NewDecoder(bytes.NewReader(input), jsontext.AllowDuplicateNames(true))
	for done := false; ; {
		tok, err := d.ReadToken()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("input is not valid JSON: %v", err)
		}
		if done {
			return errors.New("input is not valid JSON: more than one value")
		}
		done = d.StackDepth() == 0
		switch tok.Kind() {
		case '0':
			if n := len(tok.String()); n > MaxNumberLiteral {
				return fmt.Errorf("a number literal of %d characters; the limit is %d", n, MaxNumberLiteral)
			}
		case '{', '[':
			if d.StackDepth() > MaxInputDepth {
				return fmt.Errorf("input nests deeper than %d levels", MaxInputDepth)
			}
		}
	}
}

// validate checks input against an operation's input schema, within ctx.
func validate(ctx context.Context, schema *jsonschema.Schema, name string, input []byte) *Error {
	if err := checkLiterals(input); err != nil {
		return &Error{Code: CodeInvalidInput, Message: err.Error()}
	}
	if ctx.Err() != nil {
		return timeoutOrCancelled(ctx)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(input))
	if err != nil {
		return &Error{Code: CodeInvalidInput, Message: "input is not valid JSON"}
	}
	if err := schema.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		details := any(err.Error())
		if errors.As(err, &ve) {
			details = ve.BasicOutput()
		}
		return &Error{Code: CodeInvalidInput, Message: "input does not match the schema of " + name, Details: details}
	}
	if ctx.Err() != nil {
		return timeoutOrCancelled(ctx)
	}
	return nil
}

func timeoutOrCancelled(ctx context.Context) *Error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &Error{Code: CodeTimeout, Message: "deadline exceeded", Retryable: true}
	}
	return &Error{Code: CodeInternal, Message: "request cancelled"}
}
