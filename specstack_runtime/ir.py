"""The intermediate representation: typed, immutable, and written to `generated/ir.json`.

Every name a template needs (modules, classes, functions, test ids) is computed
here once, so templates only place values.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

# Re-exported: the IR is one namespace (`ir.TopologyNode`, `ir.Node`) whatever module holds it.
from specstack_runtime.ir_deploy import (
    Driver,
    DriverMethod,
    DriverParam,
    Hypervisors,
    NodeCapacity,
    TopologyNode,
    TracePoint,
)
from specstack_runtime.ir_fields import (
    ActsFor,
    Join,
    ListCount,
    Relation,
    ResourceField,
    ResourceFilter,
)
from specstack_runtime.ir_fields import Collect as Collect  # re-exported
from specstack_runtime.ir_fields import FieldRef as FieldRef  # re-exported
from specstack_runtime.ir_node import ErrorText, Node, Source
from specstack_runtime.ir_queries import (
    Query,
    QueryAsk,
    QueryJoin,
    QueryParam,
    QueryRefusal,
    QueryRequire,
)
from specstack_runtime.ir_records import Record

IR_FORMAT = 1

Via = Literal["user", "http", "amqp-cast", "amqp-call", "sql", "native"]
Kind = Literal["api", "worker", "agent", "database", "queue", "client", "hypervisor", "actor"]
#: The kinds whose components run generated code (a process each in distributed mode).
CODED_KINDS = ("api", "worker", "agent", "client")


class Catalog(Node):
    type: str
    name: str
    path: str


class MessageHandler(Node):
    message: str
    behaviour: str
    on_error: str | None
    on_failure: tuple[dict[str, Any], ...] = ()  # interactions run when handling fails
    args: dict[str, Any] = {}  # the consumer's `args:`, the behaviour's `call.args`


class Table(Node):
    name: str
    indexes: tuple[str, ...]
    #: indexes over several of `indexes`' columns, in order
    compound: tuple[tuple[str, ...], ...] = ()


def index_name(table: str, columns: tuple[str, ...] | list[str]) -> str:
    """An index's name: the store's metadata and the migrations (their template) give it."""
    return f"ix_{table}_{'_'.join(columns)}"


class StartupStep(Node):
    """What a component does once it starts: a behaviour, or a call of another API's operation."""

    behaviour: str | None = None
    title: str | None = None
    target: str | None = None  # the component called
    api: str | None = None
    operation: str | None = None
    bindings: dict[str, Any] = {}
    save_as: str | None = None
    message: str | None = None  # a queue message instead of an operation
    batch: str | None = None  # the message's array field the hosts' items go in
    every: float | None = None  # seconds: sent again every period


class Component(Node):
    name: str
    kind: Kind
    project: str
    title: str
    nodes: tuple[str, ...]
    port: int | None
    api: str | None
    catalog: Catalog | None
    database: str | None
    consumes: tuple[MessageHandler, ...]
    tables: tuple[Table, ...]
    startup: tuple[StartupStep, ...]
    module: str
    class_name: str
    source: Source


class Parameter(Node):
    name: str
    location: Literal["path", "query", "header", "cookie"]
    required: bool
    match_path: bool  # a path parameter that may contain "/" (swift object names)
    python_name: str
    json_schema: dict[str, Any]
    policy_target: str | None = None  # x-specstack-policy-target, e.g. "AUTH_%(project_id)s"


class Response(Node):
    status: str
    description: str
    content_type: str | None
    model: str | None
    since: str | None = None  # x-specstack-since: the microversion that answers with it


class Operation(Node):
    operation_id: str
    method: str
    path: str
    summary: str
    tags: tuple[str, ...]
    function_name: str
    parameters: tuple[Parameter, ...]
    request_content_type: str | None
    request_model: str | None
    responses: tuple[Response, ...]
    requires_token: bool
    behaviour: str | None
    behaviour_args: dict[str, Any]
    on_error: str | None
    source: Source
    policy: str | None = None  # the spec's x-specstack-policy (oslo.policy rule language)
    resource: str | None = None  # the resource (spec/resources) whose engine serves it
    action: str | None = None  # list, show, create, update, patch, upsert, delete, action, query
    success: tuple[int, ...] = ()  # the 2xx statuses the operation declares, in order
    since: str | None = None  # x-specstack-since: the API microversion that brings it
    until: str | None = None  # x-specstack-until: the last API microversion that has it


class DeleteRule(Node):  # what deleting a row does to the rows of `resource` naming it
    action: Literal["refuse", "cascade", "clear"]
    resource: str
    field: str
    status: int | None = None
    message: str | None = None
    kind: str | None = None  # the refusal's type name
    where: str | None = None  # CEL over the referring row: only those rows count
    key: str = "id"  # the field of the deleted row that the referring field names


class Handoff(Node):  # `delete.handoff`: a component deletes the row (cinder's back end)
    when: str | None = None  # CEL: handed off only if it holds; else the row is deleted at once
    set: dict[str, Any] = {}  # the row's changes first, compare-and-set on them
    raced: str | None = None  # the resource's error when the row changed meanwhile
    send: str
    host: str | None = None  # CEL
    payload: dict[str, Any] = {}
    failed: dict[str, Any] = {}  # the row's changes when the message could not be sent


class ActionCheck(ErrorText):  # a condition (CEL) an action needs; status: 400 accept, 409 require
    expr: str


class Guard(Node):  # an operation refused while a condition holds (a protected image's delete)
    on: tuple[str, ...]  # engine actions (create, update, delete) or state-machine actions
    when: str  # CEL over doc (the row; on create the new row) and changes
    given: str | None = None  # a key of changes: the rule applies only when it is there
    unless: str | None = None  # a policy rule: callers it allows are not refused
    each: str | None = None  # CEL: a list; `when` is checked for each `item` of it
    quote: dict[str, str] = {}  # name -> CEL: values the message may quote
    status: int = 409
    message: str
    kind: str | None = None


class Effect(Node):  # `effects` (docs/resources.md): a write's change to another resource's row
    resource: str
    id: str | None = None  # CEL: the other row's id
    create: dict[str, Any] = {}  # or a new row of the other resource: its fields
    each: str | None = None  # CEL: a list; with `create`, a row per item (`item`)
    when: str | None = None  # CEL over doc, old and row (the other): `set` applies if it holds
    refuse: str | None = None  # when it does not: this error (of the resource declaring it)
    set: dict[str, Any] = {}  # field -> literal or {"expr": CEL}
    take: dict[str, Any] = {}  # the written row's fields, from the other row (before a write)
    missing: str | None = None  # no such row: this error of the other resource (else nothing)
    var: str | None = None  # the other row as it is after, kept as call.vars[var]
    counted: bool = False  # with `create`: counted against its quotas, as its create is
    send: str | None = None  # or a message cast (resource: the one written)
    host: str | None = None  # CEL: where it goes
    payload: dict[str, Any] = {}
    failed: dict[str, Any] = {}  # it could not be sent: the written row's changes
    # or (with `id`) another API's operation called where `when` holds, best effort
    call: dict[str, str] = {}  # {api: catalog type, operation}
    body: dict[str, Any] = {}  # its JSON body: literals or {"expr": CEL} over doc, old, row


class ActionAsk(Node):  # another API's object an action's rules read, as `refs.NAME`
    name: str
    api: str  # catalog type
    operation: str
    path: str | None = None  # CEL: path parameters
    query: str | None = None  # CEL: query parameters
    when: str | None = None  # CEL: asked only when it holds
    take: str | None = None  # CEL over `reply`: what `refs.NAME` holds (default: the reply)


class ResourceAction(Node):
    """An action (`POST .../action {"name": ...}`) as a transition of the state machine."""

    name: str
    title: str | None = None  # the action's word in messages ("stop" for os-stop)
    accept: tuple[ActionCheck, ...] = ()  # on the argument (`params`): 400, before the state
    require: tuple[ActionCheck, ...] = ()  # on the row, once its state allows: 409
    # the resource's relations read (as `refs`, for `require`) over the row as `set` makes it
    relations: tuple[str, ...] = ()
    named_only: bool = False  # only an operation naming it (`name:`) runs it, not a body
    ask: tuple[ActionAsk, ...] = ()  # other APIs asked before `require` (docs/resources.md)
    from_states: tuple[str | None, ...] = ()  # () means from any state
    to: str | None = None
    has_to: bool = False
    set: dict[str, Any] = {}  # field -> literal or {"expr": CEL}
    send: str | None = None  # a queue message (a call's reply is `reply` to `answer`)
    answer: dict[str, Any] = {}  # the 200 body: literals or {"expr": CEL}
    headers: dict[str, Any] = {}  # the answer's headers: literals or {"expr": CEL}
    view: bool = False  # the answer is the row's view, whatever the status
    view_adds: dict[str, Any] = {}  # entries added to that view's object: {"expr": CEL}
    host: str | None = None  # CEL: the host a per-host message goes to
    payload: dict[str, Any] = {}  # message payload: literals or {"expr": CEL}
    hook: str | None = None
    when: str | None = None  # CEL: the action applies only if this holds
    since: str | None = None  # the API microversion that brings it (older: an unknown action)
    status: int = 202
    conflict: ErrorText | None = None  # the refusal when the state does not allow it
    policy: str | None = None  # a policy rule: others get 403 before anything is looked at
    quotas: tuple[str, ...] = ()  # quotas the changed row is counted against again (403/413)
    effects: tuple[Effect, ...] = ()  # after the transition and the hook


class RecoveryRule(Node):  # `states.recover` (docs/resources.md): component `by` at start-up
    by: str
    title: str
    when: str
    of_host: str | None = None  # the rows' field naming the host: the starting host's rows only
    hook: str | None = None
    set: dict[str, Any] = {}
    send: str | None = None
    host: str | None = None
    payload: dict[str, Any] = {}


class StateMachine(Node):
    field: str
    actions: tuple[ResourceAction, ...]
    conflict: str
    recover: tuple[RecoveryRule, ...] = ()


class Seed(Node):
    """Rows a resource is given at start-up (`seed:`), computed by CEL."""

    rows: str  # CEL: the rows, each with its id (or its `fields:` id's fields)
    exact: bool = False  # the table holds these rows only: any other is deleted


class Resource(Node):  # A resource of an API, as its spec/resources file declares it.
    name: str
    title: str
    api: str
    component: str  # the API's component: its database holds the table
    table: str
    schema_name: str
    envelope_one: str | None
    envelope_many: str
    envelope_item: str | None = None  # each list item wrapped in this key
    path_fields: dict[str, str] = {}  # path parameter -> the field it names
    id_style: str
    owner: Literal["project", "user", "none"]
    extra: bool
    shared: str | None
    parent: str | None = None  # a field naming the row `shared` sees as `parent`
    see_all: str | None
    modify: str | None
    acts_for: ActsFor | None = None
    joins: dict[str, Join] = {}  # name -> the row of another resource its answers read
    operations: dict[str, str]  # operationId -> action
    views: dict[str, tuple[str, ...]] = {}  # view name -> the fields it shows
    operation_views: dict[str, str] = {}  # operationId -> view
    fields: tuple[ResourceField, ...]
    deletes: tuple[DeleteRule, ...]
    filters: tuple[ResourceFilter, ...]
    sort_keys: dict[str, str]  # the sort key a client names -> the field
    sort_since: dict[str, str] = {}  # a sort key -> the microversion that brings it
    default_sort: tuple[str, ...]
    list_where: str | None
    list_select: str | None = None  # the request's store filter: field -> {eq|not|in: value}
    list_all: str | None  # nova's all_tenants: see_all callers list every owner's rows with it
    list_all_rule: str | None = None  # who may use list_all (default: see_all)
    list_count: ListCount | None = None  # a list's body also counts every matching row
    marker: str | None = None  # the field a marker names (default: the row's id)
    # query parameter (a filter, limit, marker) -> the API microversion that brings it
    # (older requests: ignored, so without limit and marker they get every row)
    list_since: dict[str, str] = {}
    # from this API microversion a query parameter the list does not know is a 400
    list_strict_since: str | None = None
    states: StateMachine | None
    hooks: dict[str, str]
    effects: dict[str, tuple[Effect, ...]] = {}  # hook point -> effects, after its hook
    handoff: Handoff | None = None  # `delete.handoff`
    errors: dict[str, ErrorText]
    quota: str | None
    revision: str | None = None  # a field counting the row's changes
    data: dict[str, Any] = {}  # constant tables its expressions read as `data`
    live: str | None = None  # CEL: rows for which it is false are as good as missing
    guards: tuple[Guard, ...] = ()
    location: str | None = None  # CEL: the Location header of a create's answer
    templates: dict[str, str] = {}  # CEL a behaviour renders by name (answers, rows it makes)
    relations: tuple[Relation, ...] = ()  # rows its rules read as `refs` (relations.load)
    extra_schema: dict[str, Any] | None = None  # what an extra attribute's value must match
    rows: tuple[dict[str, Any], ...] = ()  # rows it always has (created when first missing)
    seed: Seed | None = None  # rows computed at start-up
    find_by: tuple[str, ...] = ()  # fields a path's id may name the row by, when no id matches
    find_names: dict[str, str] = {}  # names the path may use for a row's id (cinder's `default`)
    require: tuple[QueryRequire, ...] = ()  # rows a list or show needs (404 without)
    records: tuple[Record, ...] = ()
    source: Source


class Quota(Node):
    name: str
    api: str
    resource: str
    default: int
    count: str | None  # CEL over the row: how much one row uses (default 1)
    limits: str | None = None  # the resource whose row (id: the project) holds its own limit
    over: ErrorText | None = None  # its own over-quota error (else the API's `over_quota`)


class Conventions(Node):  # How an API lists, pages and reports, shared by its resources.
    pagination: Literal["none", "keystone", "nova", "neutron", "glance", "cinder"] = "none"
    max_limit: int = 1000
    over_quota: ErrorText = ErrorText(message="Quota exceeded for {quota}.", status=403)
    unknown_filters: Literal["ignore", "reject"] = "ignore"
    fields_param: str | None = None
    strict_body: bool = False  # a body holds only the envelope: other keys are unknown fields
    default_limit: int | None = None  # the page size when the request gives no limit
    offset: bool = False  # lists also skip `offset` rows (cinder)
    sort_dir: Literal["asc", "desc"] = "asc"  # the direction of a sort key given without one
    patch_ops: tuple[str, ...] = ("add", "remove", "replace", "move", "copy", "test")
    errors: dict[str, ErrorText] = {}


class PolicyRule(Node):
    name: str
    rule: str


class Microversion(Node):
    """The microversions an API serves (`x-specstack-microversion` of its document)."""

    service: str  # the service name in `OpenStack-API-Version: <service> <version>`
    minimum: str  # what a request without a version header gets
    maximum: str  # what `latest` asks for
    headers: tuple[str, ...]  # response headers that carry it


class Api(Node):
    name: str
    title: str
    version: str
    component: str
    module: str
    client_class: str
    error_format: str
    microversion: Microversion | None = None
    request_id_headers: tuple[str, ...] = ()  # more headers echoing the request id
    conventions: Conventions = Conventions()
    operations: tuple[Operation, ...]
    models: tuple[str, ...]
    source: Source


class Message(Node):
    name: str
    function_name: str
    title: str
    topic: str
    method: str
    pattern: Literal["cast", "call", "fanout"]
    per_host: bool
    project: str
    consumers: tuple[str, ...]
    payload_model: str
    reply_model: str | None
    payload_schema: dict[str, Any]
    reply_schema: dict[str, Any] | None
    source: Source


class Interaction(Node):
    title: str | None = None  # a `then` interaction's own title
    source_component: str
    target_component: str
    via: Via
    operation: str | None
    message: str | None
    call: str | None
    tables: tuple[str, ...]
    summary: str
    behaviour: str | None
    bindings: dict[str, Any]
    save_as: str | None


class Step(Node):
    number: int  # the deck's number (an inserted step has the number it follows)
    label: str  # as diagrams and traces show it: "7", or "6a" for a step inserted after 6
    title: str
    slug: str
    test_id: str
    main: Interaction
    then: tuple[Interaction, ...]
    source: Source


class ErrorPath(Node):
    name: str
    step: int
    provoke: str
    summary: str
    expect: dict[str, Any]
    function_name: str


class Sequence(Node):
    name: str
    title: str
    origin: str
    final: str
    module: str
    steps: tuple[Step, ...]
    errors: tuple[ErrorPath, ...]
    source: Source


class HandlerStep(Node):  # One interaction a handler carries out, in order.
    index: int
    title: str  # the title of the sequence step it belongs to
    source: str  # who the spec says performs it (the component, or the actor it acts for)
    target: str
    via: Via
    name: str | None  # operation, message or driver method
    behaviour: str | None
    runs_trigger: bool  # an sql step that runs the trigger's own behaviour
    bindings: dict[str, Any]
    save_as: str | None
    api: str | None  # http: the target's API
    transport: Literal["noop", "authenticate", "client", "message", "driver"]
    client_module: str | None
    client_class: str | None
    client_method: str | None
    message_function: str | None  # amqp: the generated sender


class Occurrence(Node):
    """Where in a sequence the handler runs, and the labels its steps carry there."""

    sequence: str
    trigger_label: str
    labels: tuple[str, ...]
    from_client: bool  # triggered by a client: requests from outside start this flow


class Handler(Node):
    """What a component does for one trigger: an operation, a message, or a user request."""

    component: str
    kind: Literal["operation", "message", "user"]
    trigger: str
    function_name: str
    behaviour: str | None
    on_error: str | None
    args: dict[str, Any]
    steps: tuple[HandlerStep, ...]
    on_failure: tuple[HandlerStep, ...] = ()  # a consumer's `on_failure` interactions
    trigger_at: int  # index of the sql step running the behaviour, or of the step it precedes
    trigger_in_step: bool
    auth_in_steps: bool
    occurrences: tuple[Occurrence, ...]


class Stack(Node):
    name: str
    title: str
    version: str
    region: str
    description: str


class SpecSource(Node):
    file: str
    sha256: str


class GeneratedBy(Node):
    """The `$generated` stamp `generated/ir.json` opens with (not part of the IR itself)."""

    by: str
    from_: str = Field(alias="from")


class IR(Node):
    generated: GeneratedBy | None = Field(default=None, alias="$generated")
    format: int
    stack: Stack
    components: tuple[Component, ...]
    apis: tuple[Api, ...]
    messages: tuple[Message, ...]
    message_types: dict[str, Any]
    topology: tuple[TopologyNode, ...]
    hypervisors: Hypervisors
    sequences: tuple[Sequence, ...]
    handlers: tuple[Handler, ...]
    resources: tuple[Resource, ...] = ()
    quotas: tuple[Quota, ...] = ()
    queries: tuple[Query, ...] = ()
    policy: tuple[PolicyRule, ...] = ()
    osprofiler: dict[str, TracePoint] = {}  # by transport (via)
    sources: tuple[SpecSource, ...]

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def api(self, name: str) -> Api:
        return next(a for a in self.apis if a.name == name)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True, exclude={"generated"}) + "\n"


__all__ = [
    "Driver",
    "DriverMethod",
    "DriverParam",
    "ErrorText",
    "Hypervisors",
    "Node",
    "NodeCapacity",
    "Query",
    "QueryAsk",
    "QueryJoin",
    "QueryParam",
    "QueryRefusal",
    "QueryRequire",
    "Source",
    "TopologyNode",
    "TracePoint",
]
