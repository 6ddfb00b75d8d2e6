-- Orthanc as the PACS of deploy/compose.yaml: forward every CR and DX it receives
-- to CXR Node (modality "cxrnode"), except what the node made itself.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if (modality == 'CR' or modality == 'DX') and tags['Manufacturer'] ~= 'CXR Node'
     and origin['RequestOrigin'] ~= 'Lua' then
    SendToModality(instanceId, 'cxrnode')
  end
end
