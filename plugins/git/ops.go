package git

import (
	"context"
	"errors"

	"alknet.dev/alknet/plugins/sdk"
)

// Operations of the plugin.
const (
	OpList   = "git/list"
	OpCreate = "git/create"
	OpDelete = "git/delete"
	OpRefs   = "git/refs"
)

// CodeAlreadyExists answers git/create for a name that is taken.
const CodeAlreadyExists sdk.Code = "ALREADY_EXISTS"

// NameInput names a repository ("team/app"; "/team/app.git" is the same).
type NameInput struct {
	Name string `json:"name"`
}

// Deleted is the answer of git/delete.
type Deleted struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted"`
}

// Operations: git/list, git/create, git/delete, git/refs.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query(OpList, p.opList).RemoteSafe().
			Describe("the repositories the caller may read or push to (admin: all), with whether they are public, the branch HEAD names and its commit, and their size on disk"),
		sdk.Mutation(OpCreate, p.opCreate).RequireScopes(ScopeCreate).
			Errors(sdk.ErrorSpec{Code: CodeAlreadyExists, Description: "a repository of that name exists", HTTPStatus: 409}).
			Describe("creates an empty bare repository (scope git:create, on the name when the caller's resources list git-repo)"),
		sdk.Mutation(OpDelete, p.opDelete).RequireAnyScope(ScopeWrite, ScopeAdmin).
			Describe("deletes a repository: admin, or git:write on it when no push rule protects it (deny_delete, protected)"),
		sdk.Query(OpRefs, p.opRefs).RemoteSafe().
			Describe("HEAD and the references of a repository the caller may read, with their hashes"),
	}
}

func (p *Plugin) config() (*config, error) {
	cfg := p.cfg.Load()
	if cfg == nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "the git handler is not configured yet; try again")
	}
	return cfg, nil
}

// inputName checks the name of an operation's input.
func inputName(in NameInput) (string, error) {
	name, err := repoName(in.Name)
	if err != nil {
		return "", sdk.Errorf(sdk.CodeInvalidInput, "%v", err)
	}
	return name, nil
}

func (p *Plugin) opList(_ context.Context, c *sdk.Call, _ struct{}) ([]RepoInfo, error) {
	cfg, err := p.config()
	if err != nil {
		return nil, err
	}
	id := c.Identity
	out := []RepoInfo{}
	err = walkRepos(cfg.root, func(name, dir string) error {
		if id.HasScope(ScopeAdmin) || canRead(cfg, id, name) || holds(id, ScopeWrite, name) {
			out = append(out, repoInfo(cfg, name, dir))
		}
		return nil
	})
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "list the repositories: %v", err)
	}
	return out, nil
}

func (p *Plugin) opCreate(_ context.Context, c *sdk.Call, in NameInput) (RepoInfo, error) {
	cfg, err := p.config()
	if err != nil {
		return RepoInfo{}, err
	}
	name, err := inputName(in)
	if err != nil {
		return RepoInfo{}, err
	}
	if !holds(c.Identity, ScopeCreate, name) {
		return RepoInfo{}, sdk.Errorf(sdk.CodeForbidden, "%s", denied(cfg, c.Identity, ScopeCreate, "create", name))
	}
	switch err := p.create(cfg, name); {
	case errors.Is(err, errRepoExists):
		return RepoInfo{}, sdk.Errorf(CodeAlreadyExists, "repository %s exists", name)
	case err != nil:
		return RepoInfo{}, sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	p.log().Info("repository created", "repository", name, "by", "git/create", "identity", who(c.Identity))
	return repoInfo(cfg, name, repoDir(cfg.root, name)), nil
}

func (p *Plugin) opDelete(_ context.Context, c *sdk.Call, in NameInput) (Deleted, error) {
	cfg, err := p.config()
	if err != nil {
		return Deleted{}, err
	}
	name, err := inputName(in)
	if err != nil {
		return Deleted{}, err
	}
	id := c.Identity
	if !id.HasScope(ScopeAdmin) {
		if !holds(id, ScopeWrite, name) {
			return Deleted{}, sdk.Errorf(sdk.CodeForbidden, "%s", denied(cfg, id, ScopeWrite, "delete", name))
		}
		if r := cfg.rules(name); r != nil && (r.DenyDelete || len(r.Protected) > 0) {
			return Deleted{}, sdk.Errorf(sdk.CodeForbidden, "permission denied: push rules protect %s (deny_delete or protected branches); only admin may delete it", name)
		}
	}
	p.mu.Lock()
	err = deleteRepo(cfg.root, name)
	p.mu.Unlock()
	switch {
	case errors.Is(err, errRepoNotFound):
		return Deleted{}, sdk.Errorf(sdk.CodeNotFound, "repository not found: %s", name)
	case err != nil:
		return Deleted{}, sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	p.log().Info("repository deleted", "repository", name, "identity", who(id))
	return Deleted{Name: name, Deleted: true}, nil
}

func (p *Plugin) opRefs(_ context.Context, c *sdk.Call, in NameInput) ([]Ref, error) {
	cfg, err := p.config()
	if err != nil {
		return nil, err
	}
	name, err := inputName(in)
	if err != nil {
		return nil, err
	}
	if !c.Identity.HasScope(ScopeAdmin) && !canRead(cfg, c.Identity, name) {
		return nil, sdk.Errorf(sdk.CodeForbidden, "%s", denied(cfg, c.Identity, ScopeRead, "read", name))
	}
	dir := repoDir(cfg.root, name)
	if !isRepo(dir) {
		return nil, sdk.Errorf(sdk.CodeNotFound, "repository not found: %s", name)
	}
	refs, err := listRefs(dir)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "read the references of %s: %v", name, err)
	}
	return refs, nil
}
