# Build helpers shared by every calibq target.

# ccache where present. Precompiled headers change every time their inputs' mtimes
# change, so ccache needs these sloppiness settings to hit on them.
find_program(CALIBQ_CCACHE ccache)
if(CALIBQ_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${CALIBQ_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CALIBQ_CCACHE})
endif()

set(CALIBQ_PCH_HEADER ${CMAKE_CURRENT_LIST_DIR}/calibq_pch.h)

# calibq_target(<target>): warnings, include root, and the LibTorch precompiled header.
function(calibq_target target)
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Werror=switch -Werror=return-type -Wno-unused-parameter>)
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE" AND TARGET calibq_quantizers)
    target_link_libraries(${target} PRIVATE calibq_quantizers)
  endif()
  if(NOT _type STREQUAL "INTERFACE_LIBRARY")
    target_precompile_headers(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${CALIBQ_PCH_HEADER}>)
  endif()
endfunction()
