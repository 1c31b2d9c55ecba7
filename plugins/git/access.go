package git

import (
	"fmt"
	"path"
	"strings"

	"alknet.dev/alknet/plugins/sdk"
)

// Scopes and the resource type the plugin checks.
const (
	ScopeRead   = "git:read"   // fetch, clone, archive, git/refs
	ScopeWrite  = "git:write"  // push; git/delete of an unprotected repository
	ScopeCreate = "git:create" // a new repository: git/create, or a push to a new name (with git:write)
	ScopeAdmin  = "admin"      // git/list and git/refs of every repository, git/delete of any
	// ResourceRepo lists the repositories an identity's git scopes apply
	// to: resources{"git-repo": ["team/app", "team/*"]}.
	ResourceRepo = "git-repo"
)

// The access rule, in full:
//
//   - An identity without a "git-repo" entry in its resources holds its
//     git scopes for every repository. With one, they apply only to the
//     repositories it names: an entry is a repository name ("team/app";
//     a ".git" suffix is ignored) or a path.Match pattern ("team/*": one
//     level; "*" alone: top-level names). An empty list grants none.
//   - Reading (fetch, clone, archive, git/refs) needs git:read on the
//     repository, or the repository marked public in the settings —
//     public repositories are readable by anyone, anonymous callers
//     included. Anonymous callers read public repositories only.
//   - Pushing needs git:write on the repository; pushing to a name that
//     does not exist yet creates it and needs git:create on that name
//     as well. git/create needs git:create on the name.
//   - admin reads every repository through the operations (git/list,
//     git/refs) and may delete any (git/delete); it grants nothing over
//     the wire.

// granted reports whether id's git scopes apply to repository name.
func granted(id *sdk.Identity, name string) bool {
	if id == nil {
		return false
	}
	list, ok := id.Resources[ResourceRepo]
	if !ok {
		return true
	}
	for _, e := range list {
		e = strings.TrimSuffix(strings.TrimPrefix(e, "/"), ".git")
		if e == name {
			return true
		}
		if m, err := path.Match(e, name); err == nil && m {
			return true
		}
	}
	return false
}

// holds reports whether id holds scope for repository name.
func holds(id *sdk.Identity, scope, name string) bool {
	return id.HasScope(scope) && granted(id, name)
}

func canRead(cfg *config, id *sdk.Identity, name string) bool {
	return cfg.public(name) || holds(id, ScopeRead, name)
}

// denied is the message of a refusal: it names what is missing.
func denied(cfg *config, id *sdk.Identity, scope, verb, name string) string {
	switch {
	case id == nil:
		return fmt.Sprintf("permission denied: %s required to %s %s (anonymous callers reach public repositories only; connect with an identity)", scope, verb, name)
	case id.HasScope(scope) && !granted(id, name):
		return fmt.Sprintf("permission denied: %s is not among the repositories granted to %s (resources %q)", name, id.ID, ResourceRepo)
	}
	return fmt.Sprintf("permission denied: %s required to %s %s", scope, verb, name)
}

// verb names what a service does, for refusals.
func verb(service string) string {
	switch service {
	case ServiceReceivePack:
		return "push to"
	case ServiceUploadArchive:
		return "archive"
	}
	return "fetch"
}
