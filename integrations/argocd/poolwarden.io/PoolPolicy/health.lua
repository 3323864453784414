-- Argo CD health check for poolwarden.io/PoolPolicy (Lua 5.1, as Argo CD's gopher-lua).
-- Reads the conditions poolwarden writes (Ready, Degraded, Stalled, Conflict,
-- Reconciling, DatabaseReachable, BudgetExceeded) and returns Healthy, Progressing,
-- Degraded or Suspended with the condition's reason and message.
-- Install: argocd-cm `resource.customizations.health.poolwarden.io_PoolPolicy` (docs/monitoring.md).
local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local annotations = (obj.metadata or {}).annotations or {}
if annotations["poolwarden.io/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Paused by the poolwarden.io/paused annotation: no env writes, no restarts"
  return hs
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for poolwarden to reconcile the policy"
  return hs
end

local generation = (obj.metadata or {}).generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for poolwarden to observe generation " .. tostring(generation)
  return hs
end

-- Order matters: a broken policy or database says so before "not ready yet".
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled, "Stalled")
  return hs
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = say(degraded, "Degraded")
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = say(reconciling, "Progressing")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Pool env in sync, no leaking pods"
  local budget = condition("BudgetExceeded")
  if budget ~= nil and budget.status == "True" then
    hs.message = hs.message .. "; warning: " .. say(budget, "BudgetExceeded")
  end
  return hs
end

hs.status = "Progressing"
hs.message = say(ready, "Waiting for the Ready condition")
return hs
