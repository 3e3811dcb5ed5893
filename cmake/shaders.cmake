# Compiles shaders/*.comp with glslc at build time and embeds the SPIR-V in the binary.
#
# A shader file lists its variants in header lines of the form
#   //! variant NAME [requires=FEATURE] [-DKEY=VALUE ...]
# Each variant becomes one embedded SPIR-V module called NAME. A file without such lines becomes one module
# named after the file. FEATURE names a glslc capability found by the probes below; variants whose feature
# glslc lacks are left out and the engine reports that path as unavailable.

set(MACH_SHADER_DIR ${CMAKE_SOURCE_DIR}/shaders)
set(MACH_SPV_DIR ${CMAKE_BINARY_DIR}/spv)
set(MACH_SHADER_INCLUDE_DIR ${CMAKE_BINARY_DIR}/generated)
file(MAKE_DIRECTORY ${MACH_SPV_DIR} ${MACH_SHADER_INCLUDE_DIR})
set(MACH_GLSLC_FLAGS --target-env=vulkan1.2 -O -I${MACH_SHADER_DIR})

# Feature probes: tiny shaders that only compile when glslc supports an extension.
set(MACH_SHADER_FEATURES "")
set(MACH_SHADER_FEATURE_DEFINES "")
file(GLOB probe_files ${MACH_SHADER_DIR}/probes/*.comp)
foreach(probe ${probe_files})
  get_filename_component(feature ${probe} NAME_WE)
  execute_process(COMMAND ${GLSLC} ${MACH_GLSLC_FLAGS} ${probe} -o ${CMAKE_BINARY_DIR}/probe_${feature}.spv
    RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  string(TOUPPER ${feature} upper)
  if(rc EQUAL 0)
    list(APPEND MACH_SHADER_FEATURES ${feature})
    list(APPEND MACH_SHADER_FEATURE_DEFINES MACH_GLSLC_HAS_${upper}=1)
    message(STATUS "glslc supports ${feature}")
  else()
    list(APPEND MACH_SHADER_FEATURE_DEFINES MACH_GLSLC_HAS_${upper}=0)
    message(STATUS "glslc lacks ${feature}: shaders that need it are left out")
  endif()
endforeach()

file(GLOB shader_sources CONFIGURE_DEPENDS ${MACH_SHADER_DIR}/*.comp)
file(GLOB shader_includes CONFIGURE_DEPENDS ${MACH_SHADER_DIR}/*.glsl)
set(spv_files "")
set(spv_names "")
foreach(src ${shader_sources})
  # Variant lines are read at configure time: editing a shader re-runs the configure step.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
  get_filename_component(base ${src} NAME_WE)
  file(STRINGS ${src} variant_lines REGEX "^//! variant ")
  if(NOT variant_lines)
    set(variant_lines "//! variant ${base}")
  endif()
  foreach(line ${variant_lines})
    string(REGEX REPLACE "^//! variant +" "" spec "${line}")
    string(REGEX REPLACE " +" ";" spec "${spec}")
    list(POP_FRONT spec name)
    set(defines "")
    set(skip FALSE)
    foreach(item ${spec})
      if(item MATCHES "^requires=(.*)$")
        if(NOT CMAKE_MATCH_1 IN_LIST MACH_SHADER_FEATURES)
          set(skip TRUE)
        endif()
      else()
        list(APPEND defines ${item})
      endif()
    endforeach()
    if(skip)
      continue()
    endif()
    if(name IN_LIST spv_names)
      message(FATAL_ERROR "shader variant name '${name}' is defined twice (in ${src})")
    endif()
    set(out ${MACH_SPV_DIR}/${name}.spv)
    add_custom_command(OUTPUT ${out}
      COMMAND ${GLSLC} ${MACH_GLSLC_FLAGS} ${defines} -MD -MF ${out}.d ${src} -o ${out}
      DEPENDS ${src} ${shader_includes}
      DEPFILE ${out}.d
      COMMENT "glslc ${name}"
      VERBATIM)
    list(APPEND spv_files ${out})
    list(APPEND spv_names ${name})
  endforeach()
endforeach()

set(MACH_SHADER_EMBED_CPP ${MACH_SHADER_INCLUDE_DIR}/embedded_shaders.cpp)
add_custom_command(OUTPUT ${MACH_SHADER_EMBED_CPP}
  COMMAND ${CMAKE_COMMAND} -DOUT=${MACH_SHADER_EMBED_CPP} "-DSPV_FILES=${spv_files}"
          -P ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
  DEPENDS ${spv_files} ${CMAKE_SOURCE_DIR}/cmake/embed_spirv.cmake
  COMMENT "embedding ${CMAKE_MATCH_COUNT} SPIR-V modules"
  VERBATIM)
add_custom_target(mach_shaders DEPENDS ${MACH_SHADER_EMBED_CPP})
