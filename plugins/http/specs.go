package httpplugin

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"alknet.dev/alknet/plugins/sdk"
)

// schemaParallel bounds the services/schema calls one request (an OpenAPI
// document, an MCP tools/list) makes at once.
const schemaParallel = 8

// visibleNames are the operations services/list shows c: those it may call.
func (p *Plugin) visibleNames(ctx context.Context, c *caller) ([]string, error) {
	out, err := p.host.Invoke(ctx, c.actor, "services/list", struct{}{})
	if err != nil {
		return nil, err
	}
	var list struct {
		Operations []struct {
			Name string `json:"name"`
		} `json:"operations"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "services/list answered something else: %v", err)
	}
	names := make([]string, len(list.Operations))
	for i, o := range list.Operations {
		names[i] = o.Name
	}
	return names, nil
}

// fetchSpecs reads services/schema of each of names as c, at most
// schemaParallel at once, each into a T that ok accepts. An operation gone,
// or out of c's reach, since it was listed is left out; any other failure
// is the error (the first in names' order).
func fetchSpecs[T any](ctx context.Context, p *Plugin, c *caller, names []string, ok func(*T) bool) ([]*T, error) {
	specs := make([]*T, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, schemaParallel)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // owned by fetchSpecs: waited for below
			defer wg.Done()
			defer func() { <-sem }()
			out, err := p.host.Invoke(ctx, c.actor, "services/schema", map[string]string{"name": name})
			var ce *sdk.Error
			switch {
			case errors.As(err, &ce) && (ce.Code == sdk.CodeNotFound || ce.Code == sdk.CodeForbidden):
			case err != nil:
				errs[i] = err
			default:
				spec := new(T)
				if err := json.Unmarshal(out, spec); err != nil || !ok(spec) {
					errs[i] = sdk.Errorf(sdk.CodeInternal, "services/schema of %s answered something else", name)
					return
				}
				specs[i] = spec
			}
		}()
	}
	wg.Wait()
	var found []*T
	for i, spec := range specs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if spec != nil {
			found = append(found, spec)
		}
	}
	return found, nil
}
