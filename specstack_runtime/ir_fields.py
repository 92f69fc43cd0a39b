"""The IR of a resource's fields and filters, and of the rows of other resources it reads
(`relations:`, `joins:`, `acts_for:`)."""

from __future__ import annotations

from typing import Any, Literal

from specstack_runtime.ir_node import ErrorText, Node


class FieldRef(Node):  # a field naming a row of another resource of the same API
    resource: str
    status: int = 400
    message: str | None = None
    when: str | None = None  # CEL: checked only when this holds
    kind: str | None = None  # the error's type name
    modify: ErrorText | None = None  # the caller must be allowed to change the named row


class Collect(Node):
    """A field listing the ids of the rows of `resource` whose `field` names this row."""

    resource: str
    field: str
    rows: bool = False  # the rows themselves, not their ids (neutron's security_group_rules)


class ResourceField(Node):
    """One field of a resource: its shape from the API's schema, its meaning from the spec."""

    name: str
    types: tuple[str, ...]  # JSON types the schema allows ("null" included); () for any
    max_length: int | None = None
    enum: tuple[Any, ...] | None = None
    has_default: bool = False
    default: Any = None
    default_expr: str | None = None  # CEL
    required: bool = False
    always: bool = False  # the answer's schema requires it: rendered (as null) even when unset
    write: Literal["always", "create", "never"] = "always"
    unique: tuple[str, ...] | None = None  # unique together with these fields
    ref: FieldRef | None = None
    computed: str | None = None  # CEL, rendered, never stored
    hidden: bool = False
    visible: str | None = None  # a policy rule
    open_since: str | None = None  # the microversion from which `visible` no longer limits it
    since: str | None = None  # the API microversion that brings it (shown and accepted)
    until: str | None = None  # the last API microversion that has it (newer ones neither)
    hash: str | None = None
    store_as: str | None = None
    shown_once: bool = False  # a hashed value: in the create answer, then only its hash kept
    merge: bool = False
    alias: str | None = None  # a request attribute of this name is taken as that field's
    in_schema: bool = True
    render: str | None = None  # CEL: how the stored value is shown
    normalize: str | None = None  # CEL over `doc` (what a write gives): the value as stored
    optional: bool = False  # left out of answers when it has no value
    conflict: str | None = None  # the 409 message when its value is taken
    invalid: str | None = None  # the 400 message when a value does not fit
    json_schema: dict[str, Any] | None = None  # what a request's value must match (refs inlined)
    stored: str | None = None  # the row's key holding the value (the API calls it `name`)
    set_by: str | None = None  # a policy rule: who may give or change the field
    collect: Collect | None = None
    minimum: float | None = None
    maximum: float | None = None
    coerce: Literal["int", "float", "string", "bool", "datetime"] | None = None
    pattern: str | None = None


class ActsFor(Node):
    """A call made for another owner than the caller (nova's key pairs' `user_id`)."""

    param: str  # the query parameter (list, show, delete) naming the owner
    rule: str  # a policy rule, with the owner named as the target's owner field
    since: str | None = None  # the API microversion that brings the parameter


class Join(Node):
    """Another resource's row a row's answer reads (`join.NAME` in its computed fields): the
    one whose field `by` holds the value of `on` (CEL over `doc`), as that resource shows it."""

    resource: str
    by: str
    on: str


class ResourceFilter(Node):
    param: str
    field: str
    op: Literal[
        "eq",
        "ieq",
        "in",
        "prefix",
        "regex",
        "bool",
        "all",
        "any",
        "gte",
        "lte",
        "changes_since",
        "ignore",
        "eq_or_in",
        "compare",
        "subset",
        "like",
        "items",
        "not_all",
        "not_any",
    ]
    keys: dict[str, tuple[str, str]] = {}  # op items: KEY -> (item field, eq|contains|prefix)
    visible: str | None = None  # a policy rule: the filter applies only to callers it allows
    values: tuple[str, ...] | None = None  # the values the parameter accepts (400 otherwise)
    requires: str | None = None  # a policy rule: others get 403 for using the filter
    open_since: str | None = None  # the microversion from which `visible` no longer limits it
    since: str | None = None  # the microversion that brings it (older: the parameter is ignored)
    values_since: str | None = None  # the microversion from which `values` is checked
    invalid: str | None = None  # the 400 message for a value `values` lacks
    default: str | None = None  # the parameter's value when the request gives none


class ListCount(Node):
    """A list parameter asking for the number of rows that match (cinder's with_count)."""

    param: str
    since: str | None = None  # the microversion that brings it (older requests: ignored)


class Relation(Node):
    """A row of another resource the resource's rules read as `refs.NAME` (`relations:`)."""

    name: str
    resource: str
    id: str | None = None  # CEL over doc and refs: the row's id (null or '': none)
    match: dict[str, str] = {}  # field -> CEL: the first row with these values
    visible: bool = False  # only a row the caller sees
    when: str | None = None  # CEL over `row` (as stored): false, as good as none
    many: bool = False  # every row that matches, as a list (with `match`)
